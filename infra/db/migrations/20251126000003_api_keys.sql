-- API keys: every /api/v1 route needs one. Only a digest of the key is stored; the
-- prefix is kept in clear so operators can recognise a key in listings without its secret.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-table

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE SCHEMA IF NOT EXISTS core;

CREATE TABLE core.api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    tenant text NOT NULL,
    key_prefix text NOT NULL,
    -- Verification looks the key up by this digest (unique index).
    key_hash bytea NOT NULL,
    scopes text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    CONSTRAINT uq_api_keys_key_hash UNIQUE (key_hash)
);
CREATE INDEX idx_api_keys_tenant ON core.api_keys (tenant);

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP TABLE core.api_keys;
