-- Usage of the paid upstreams and the daily paid-call quota of each API key (docs/security.md,
-- "Usage and quotas"). core.usage_daily: paid calls per UTC day, tenant, key id ('' for work
-- done for no key, e.g. a webhook job, under tenant '_system') and upstream, added in batches by
-- every process (one upsert per flush). core.api_keys.paid_quota_daily: the key's paid calls
-- per UTC day at most; NULL = no quota.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-table, ban-drop-column

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE SCHEMA IF NOT EXISTS core;

CREATE TABLE IF NOT EXISTS core.usage_daily (
    day date NOT NULL,
    tenant text NOT NULL,
    key_id text NOT NULL,
    upstream text NOT NULL,
    calls bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, tenant, key_id, upstream)
);

-- A nullable column without a default: a catalogue change only, no table rewrite. integer on
-- purpose: a quota is at most 100,000,000 (domain.usage.MAX_QUOTA).
-- squawk-ignore prefer-bigint-over-int
ALTER TABLE core.api_keys ADD COLUMN IF NOT EXISTS paid_quota_daily integer;

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
ALTER TABLE core.api_keys DROP COLUMN IF EXISTS paid_quota_daily;
DROP TABLE IF EXISTS core.usage_daily;
