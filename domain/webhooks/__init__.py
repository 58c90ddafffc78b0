"""Webhooks: the C2S intake, the durable webhook job and the Google Ads lead intake.

* :mod:`domain.webhooks.parsing`: the C2S webhook body into events (``docs/contract.md`` §1.9);
* :mod:`domain.webhooks.intake`: :class:`WebhookIntake`, bounding a body and storing its events;
* :mod:`domain.webhooks.events`: what the event store keeps (its port is
  :class:`domain.ports.EventStore`);
* :mod:`domain.webhooks.retry` and :mod:`domain.webhooks.job`: :func:`run_event_job` and the
  classification of its failures;
* :mod:`domain.webhooks.google_ads`: :func:`intake_google_lead` (``docs/contract.md`` §1.10).

All of it is free of I/O: the ports do it.
"""

from __future__ import annotations

from domain.ports import EventStore, GoogleLeadClaims
from domain.webhooks.events import (
    TERMINAL_STATUSES,
    AcceptResult,
    EventStatus,
    QueueStats,
    StoredEvent,
)
from domain.webhooks.google_ads import (
    CREATE_OUTCOME_UNKNOWN,
    GoogleAdsColumn,
    GoogleAdsIntake,
    GoogleAdsLead,
    GoogleAdsResult,
    GoogleAdsSettings,
    GoogleLeadClaim,
    intake_google_lead,
    truncate_text,
)
from domain.webhooks.intake import IntakeOutcome, IntakeResult, WebhookIntake
from domain.webhooks.job import (
    ALREADY_MESSAGED,
    MESSAGES_DISABLED,
    SEND_OUTCOME_UNKNOWN,
    JobOutcome,
    run_event_job,
)
from domain.webhooks.parsing import (
    HOOK_ACTIONS,
    ParsedWebhook,
    RejectedEvent,
    WebhookEvent,
    count_webhook_events,
    decode_stored_event,
    parse_updated_at,
    parse_webhook_body,
    parse_webhook_document,
)
from domain.webhooks.retry import DEFAULT_RETRY_POLICY, RetryPolicy, is_provably_unsent

__all__ = [
    "ALREADY_MESSAGED",
    "CREATE_OUTCOME_UNKNOWN",
    "DEFAULT_RETRY_POLICY",
    "HOOK_ACTIONS",
    "MESSAGES_DISABLED",
    "SEND_OUTCOME_UNKNOWN",
    "TERMINAL_STATUSES",
    "AcceptResult",
    "EventStatus",
    "EventStore",
    "GoogleAdsColumn",
    "GoogleAdsIntake",
    "GoogleAdsLead",
    "GoogleAdsResult",
    "GoogleAdsSettings",
    "GoogleLeadClaim",
    "GoogleLeadClaims",
    "IntakeOutcome",
    "IntakeResult",
    "JobOutcome",
    "ParsedWebhook",
    "QueueStats",
    "RejectedEvent",
    "RetryPolicy",
    "StoredEvent",
    "WebhookEvent",
    "WebhookIntake",
    "count_webhook_events",
    "decode_stored_event",
    "intake_google_lead",
    "is_provably_unsent",
    "parse_updated_at",
    "parse_webhook_body",
    "parse_webhook_document",
    "run_event_job",
    "truncate_text",
]
