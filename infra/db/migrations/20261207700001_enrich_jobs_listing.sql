-- The listing of a tenant's bulk jobs (GET /api/v1/enrich/jobs, newest first, keyset pages on
-- (created_at, id)): one index in the listing's order, every state (the partial index of
-- 20261207500001 holds open jobs only).
--
-- Not CONCURRENTLY, for the reason given in 20261207400001: dbmate applies a migration under its
-- advisory lock, and a concurrent build waits for every open transaction, including another
-- instance waiting for that lock. The table holds the jobs of BULK_RETENTION_DAYS (rows per job,
-- not per item): a plain build's SHARE lock lasts one short scan; lock_timeout bounds the wait.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file require-concurrent-index-creation, require-concurrent-index-deletion

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE INDEX IF NOT EXISTS idx_enrich_jobs_listing
    ON core.enrich_jobs (tenant, created_at DESC, id DESC);

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP INDEX IF EXISTS core.idx_enrich_jobs_listing;
