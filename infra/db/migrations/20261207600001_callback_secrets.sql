-- Callback signing secrets of API keys (docs/callbacks.md): the secrets that sign the callbacks
-- of a key's bulk jobs. A signer needs the secret itself, so it cannot be a one-way digest: it is
-- stored sealed (AES-256-GCM, infra/sealing.py, keys derived from CACHE_HMAC_KEYS, the row's key
-- and secret ids as associated data). At most two are valid (retired_at IS NULL) per key: the
-- current one and the one being rotated out; every valid one signs each delivery.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-table

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE SCHEMA IF NOT EXISTS core;

CREATE TABLE core.callback_secrets (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    key_id uuid NOT NULL REFERENCES core.api_keys (id) ON DELETE CASCADE,
    sealed bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
CREATE INDEX idx_callback_secrets_key ON core.callback_secrets (key_id, created_at DESC);

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP TABLE core.callback_secrets;
