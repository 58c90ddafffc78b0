-- Dead letters of the webhook queue, visible and redrivable (docs/runbooks/QueueDeadLetters.md).
-- dead_lettered_at: set when the worker gave up on a transient failure (retry budget spent, or
-- the job interrupted too often); cleared by a redrive. redriven_at: the last redrive by an
-- operator; the retry budget of a redriven event counts from it instead of received_at.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-column

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

ALTER TABLE core.webhook_events ADD COLUMN IF NOT EXISTS dead_lettered_at timestamptz;
ALTER TABLE core.webhook_events ADD COLUMN IF NOT EXISTS redriven_at timestamptz;
-- The DLQ depth (sampled every 15 s by each worker) and `jobs list --state dead`. A partial index
-- over the few dead letters; the table's lock is held for the time of one scan of it.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX IF NOT EXISTS idx_webhook_events_dead
    ON core.webhook_events (dead_lettered_at)
    WHERE status = 'failed' AND dead_lettered_at IS NOT NULL;

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
-- squawk-ignore require-concurrent-index-deletion
DROP INDEX IF EXISTS core.idx_webhook_events_dead;
ALTER TABLE core.webhook_events DROP COLUMN IF EXISTS redriven_at;
ALTER TABLE core.webhook_events DROP COLUMN IF EXISTS dead_lettered_at;
