-- Durable inbox of webhook events (C2S today): an event is stored before the webhook answers
-- 2xx and then moves received -> queued -> processing -> completed | failed.
-- send_intent_at / message_sent_at let the worker avoid a duplicate C2S message after a crash:
-- an intent without a sent mark is checked before sending again.
-- The down section is for local development only: production is forward-only.
-- squawk-ignore-file ban-drop-table

-- migrate:up
SET lock_timeout = '5s';
SET statement_timeout = '60s';

CREATE SCHEMA IF NOT EXISTS core;

CREATE TABLE core.webhook_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    source text NOT NULL DEFAULT 'c2s',
    lead_id text NOT NULL,
    -- The event's own updated_at: with (source, lead_id) it is the idempotency key.
    updated_at timestamptz NOT NULL,
    hook_action text,
    payload_raw jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    status text NOT NULL DEFAULT 'received',
    -- squawk-ignore prefer-bigint-over-int
    attempts integer NOT NULL DEFAULT 0,
    error_message text,
    send_intent_at timestamptz,
    message_sent_at timestamptz,
    -- W3C trace context of the request that accepted the event, to link the worker's spans.
    trace_context jsonb,
    CONSTRAINT uq_webhook_events_source_lead_updated UNIQUE (source, lead_id, updated_at),
    CONSTRAINT chk_webhook_events_status
        CHECK (status IN ('received', 'queued', 'processing', 'completed', 'failed')),
    CONSTRAINT chk_webhook_events_attempts CHECK (attempts >= 0)
);
-- The worker and the "stuck events" alert scan only the open events, oldest first.
CREATE INDEX idx_webhook_events_open ON core.webhook_events (received_at)
    WHERE status IN ('received', 'queued', 'processing');
CREATE INDEX idx_webhook_events_lead ON core.webhook_events (lead_id);

-- migrate:down
SET lock_timeout = '5s';
SET statement_timeout = '60s';
DROP TABLE core.webhook_events;
