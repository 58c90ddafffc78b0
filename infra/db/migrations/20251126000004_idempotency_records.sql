-- Idempotency-Key support: the first request with a key stores its response; a replay with the
-- same key and the same request hash gets the stored response, a different hash is a conflict.
-- status_code and response_body stay NULL while the first request is still in flight.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-table

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE SCHEMA IF NOT EXISTS core;

CREATE TABLE core.idempotency_records (
    tenant text NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    -- squawk-ignore prefer-bigint-over-int
    status_code integer,
    response_body bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, key),
    CONSTRAINT chk_idempotency_records_status CHECK (status_code BETWEEN 100 AND 599)
);
-- The purge job deletes expired records.
CREATE INDEX idx_idempotency_records_expires ON core.idempotency_records (expires_at);

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP TABLE core.idempotency_records;
