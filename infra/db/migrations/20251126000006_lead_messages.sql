-- One C2S message per lead and contacts (docs/contract.md §2, "One message per lead"): per
-- tenant and lead, a keyed digest of the contact fingerprint the lead was last messaged for and
-- the CPFs of that message. An event whose fingerprint equals the recorded one completes without
-- a message, so C2S's update events (our own message among their causes) never loop.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-table

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE SCHEMA IF NOT EXISTS core;

CREATE TABLE core.lead_messages (
    tenant text NOT NULL,
    lead_id text NOT NULL,
    -- Keyed digest (hex) of the normalised phone and e-mail; never the contacts themselves.
    contact_digest text NOT NULL,
    cpfs text[] NOT NULL,
    messaged_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, lead_id)
);

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP TABLE core.lead_messages;
