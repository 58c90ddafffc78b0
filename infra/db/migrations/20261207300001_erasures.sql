-- Data-subject rights and retention (LGPD art. 15-18; docs/security.md, "LGPD").
--
-- core.erasures: one tombstone per person erased at their request, named by the keyed digest of
-- the CPF (domain.audit.SubjectDigester), never the CPF. Until hold_until the pipeline refuses to
-- buy the person's dossier again, unless a request carries their renewed consent (lifted_at).
--
-- Indexes for the retention job (infra/db/retention.py), which purges in bounded batches, oldest
-- first: parties not refreshed for RETENTION_DAYS, raw payloads older than RAW_RETENTION_DAYS;
-- and for an erasure, the lead messages naming a CPF. dbmate runs each migration in a
-- transaction, so CONCURRENTLY is not possible: each build holds its table's write lock for one
-- scan of it (seconds on a million parties), like the dead-letter index before it.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-table

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '300s';

CREATE TABLE core.erasures (
    subject text PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now(),
    hold_until timestamptz NOT NULL,
    -- The requester: tenant of the API key ('' for an operator) and its id.
    tenant text NOT NULL DEFAULT '',
    key_id text,
    consent_withdrawn boolean NOT NULL DEFAULT false,
    -- A request carrying the person's renewed consent lifted the hold (kept as a record).
    lifted_at timestamptz,
    CONSTRAINT chk_erasures_hold CHECK (hold_until >= erased_at)
);

-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS idx_parties_updated_at ON core.parties (updated_at);
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS idx_party_enrichments_enriched_at
    ON core.party_enrichments (enriched_at)
    WHERE raw_payload <> 'null'::jsonb;
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS idx_party_enrichment_history_enriched_at
    ON core.party_enrichment_history (enriched_at);
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS idx_lead_messages_cpfs ON core.lead_messages USING gin (cpfs);

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX IF EXISTS core.idx_lead_messages_cpfs;
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX IF EXISTS core.idx_party_enrichment_history_enriched_at;
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX IF EXISTS core.idx_party_enrichments_enriched_at;
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX IF EXISTS core.idx_parties_updated_at;
DROP TABLE core.erasures;
