-- Callback deliveries of bulk jobs (docs/callbacks.md): one row per job end to announce,
-- inserted in the transaction that ends the job, posted by `c2s-api worker` until a 2xx, retried
-- with backoff for 24 h after the first attempt, then failed. job_id has no foreign key: the job
-- tables live in their own migrations. body is the exact signed payload (a job summary, no
-- personal data); last_error names HTTP statuses and error classes only.
-- claim_token and the lease (next_attempt_at moved forward at claim) make a delivery whose worker
-- died or was stopped due again: it is retried, never lost.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-table

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE SCHEMA IF NOT EXISTS core;

CREATE TABLE core.callback_deliveries (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id uuid NOT NULL,
    tenant text NOT NULL,
    key_id uuid NOT NULL,
    url text NOT NULL,
    body bytea NOT NULL,
    state text NOT NULL DEFAULT 'pending',
    -- squawk-ignore prefer-bigint-over-int
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claim_token uuid,
    first_attempt_at timestamptz,
    last_attempt_at timestamptz,
    -- squawk-ignore prefer-bigint-over-int
    last_status integer,
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    failed_at timestamptz,
    CONSTRAINT ck_callback_deliveries_state CHECK (state IN ('pending', 'delivered', 'failed'))
);
-- The delivery loop's claim: due pending rows, oldest due first.
CREATE INDEX idx_callback_deliveries_due
    ON core.callback_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX idx_callback_deliveries_job ON core.callback_deliveries (job_id, created_at);

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP TABLE core.callback_deliveries;
