-- Bulk enrichment jobs (POST /api/v1/enrich/jobs, docs/contract.md "Bulk enrichment jobs").
--
-- core.enrich_jobs: one row per job, with its tenant and API key (the worker acts for that key:
-- audit trail, usage meter, quota), options, callback URL and running counters. The counters are
-- updated by the statement that finishes an item (the job row's lock serialises them), so the
-- job view and "is the job finished" never count 10,000 rows.
-- core.enrich_job_items: one row per item, in the submitted order (seq). The identifiers are
-- personal data stored as the party model stores them (plain columns, never logged); `cpf` (the
-- query's) and `subject_cpf` (the CPF of the customer found) are indexed so a subject's rows can
-- be found and erased. `result` is the UnifiedCustomer or the error outcome (jsonb).
-- Items are claimed by `c2s-api worker` with FOR UPDATE SKIP LOCKED and a lease
-- (claimed_by, lease_until); a queued item's lease_until is its retry time (NULL: now).
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-table

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE SCHEMA IF NOT EXISTS core;

CREATE TABLE core.enrich_jobs (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    key_id text,
    request_id text,
    state text NOT NULL DEFAULT 'queued'
        CONSTRAINT chk_enrich_jobs_state CHECK (state IN ('queued', 'running', 'done', 'cancelled')),
    may_fetch boolean NOT NULL,
    paid_quota bigint,
    max_age_s bigint,
    min_likelihood double precision,
    callback_url text,
    total bigint NOT NULL,
    open_items bigint NOT NULL,
    n_done bigint NOT NULL DEFAULT 0,
    n_failed bigint NOT NULL DEFAULT 0,
    n_not_found bigint NOT NULL DEFAULT 0,
    n_cancelled bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    cancel_requested_at timestamptz,
    finished_at timestamptz
);

-- The claim loop's "active jobs per tenant, oldest first" and the stuck-job sample.
CREATE INDEX idx_enrich_jobs_active ON core.enrich_jobs (tenant, created_at)
    WHERE state IN ('queued', 'running');

CREATE TABLE core.enrich_job_items (
    job_id uuid NOT NULL REFERENCES core.enrich_jobs (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    ref text,
    cpf text,
    email text,
    phone text,
    name text,
    state text NOT NULL DEFAULT 'queued'
        CONSTRAINT chk_enrich_job_items_state
        CHECK (state IN ('queued', 'running', 'done', 'failed', 'not_found', 'cancelled')),
    result jsonb,
    subject_cpf text,
    attempts bigint NOT NULL DEFAULT 0,
    claimed_by uuid,
    lease_until timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (job_id, seq)
);

-- Claims: the next queued items of a job, in order.
CREATE INDEX idx_enrich_job_items_queued ON core.enrich_job_items (job_id, seq)
    WHERE state = 'queued';
-- Leases: running items (per-tenant concurrency, expired leases, heartbeats).
CREATE INDEX idx_enrich_job_items_running ON core.enrich_job_items (job_id, lease_until)
    WHERE state = 'running';
-- Subject erasure: every item that names or found a CPF.
CREATE INDEX idx_enrich_job_items_cpf ON core.enrich_job_items (cpf) WHERE cpf IS NOT NULL;
CREATE INDEX idx_enrich_job_items_subject_cpf ON core.enrich_job_items (subject_cpf)
    WHERE subject_cpf IS NOT NULL;

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP TABLE IF EXISTS core.enrich_job_items;
DROP TABLE IF EXISTS core.enrich_jobs;
