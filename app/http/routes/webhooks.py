"""Webhooks: ``POST /webhooks/c2s`` (durable intake) and ``POST /webhooks/google-ads``.

Both are excluded from API-key auth (``opt["exclude_from_auth"]``) and from ``Idempotency-Key``
handling (deliveries are idempotent by themselves, and nothing may be stored for a request
before it is authenticated): each has its own secret, checked in constant time before the
handler by the guard :func:`webhook_guard` builds from the settings (route ``opt["webhook"]``
names the check; a route without one is refused). Their bodies are bounded by
``WEBHOOK_MAX_BODY_BYTES`` (413 above it).

C2S webhook contract (``docs/contract.md`` §1.9, docs/adr/0004-durable-webhook-jobs.md,
docs/security.md "Webhook authentication"):

* Authentication, whenever ``WEBHOOK_SECRET`` is set (one secret, or ``current,previous`` during
  a rotation; every listed secret is accepted):

  - preferred, a signature over the raw body: ``X-C2S-Signature: t=<unix>,v1=<hex>`` with
    ``v1 = HMAC-SHA256(secret, "<t>." + body)`` and ``t`` within
    ``WEBHOOK_SIGNATURE_TOLERANCE_S`` of the receiver's clock (replay window);
  - or, for senders that cannot sign, the secret itself in ``X-Webhook-Token`` or ``?token=``
    (every token presented must match).

  Neither valid: 401 problem+json, before the body is stored or queued. Without a secret (only
  possible outside production, where start-up refuses it) the webhook is open and the process
  warns at start-up.
* At most ``WEBHOOK_MAX_EVENTS`` events per body: more is a 413 naming the limit, and nothing of
  the body is stored.
* The events are stored durably in PostgreSQL, each with its job, BEFORE the answer: a 200 means
  nothing can be lost. A failing database is a 503 with ``Retry-After`` (the sender retries; the
  retry is idempotent).
* Answer ``{"status":"received","received":n,"processed":p,"duplicates":d}``: ``received`` counts
  the events of the body, ``processed`` the newly stored ones, ``duplicates`` the ones stored
  before; ``rejected`` (invalid events, counted in neither) is added only when non-zero.
* When SOME events are invalid the answer is still 200 (the valid ones are stored; a redelivery
  could not fix the invalid ones). When the body is not JSON, or EVERY event is invalid, nothing
  was accepted: 400 problem+json naming each offending field.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
import structlog
from litestar import Controller, Request, post
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.params import Body, HeaderParameter, JSONBody, QueryParameter
from opentelemetry import propagate

from app.http.middleware.bodyguard import mark_authenticated
from app.http.problems import problem_responses
from app.http.routes import GoogleAdsDep, WebhookIntakeDep
from domain.signatures import (
    MAX_SIGNATURE_HEADER_LENGTH,
    SignatureCheck,
    parse_secrets,
    token_matches,
    verify_signature,
)
from domain.webhooks import (
    GoogleAdsLead,
    GoogleAdsResult,
)

# Litestar reads handler annotations at runtime: Request and the dependency aliases of
# app.http.routes are imported for real, not under TYPE_CHECKING.

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from litestar.types import Guard

    from app.config import Settings

__all__ = [
    "SIGNATURE_HEADER",
    "TOKEN_HEADER",
    "C2SWebhookAnswer",
    "WebhookController",
    "c2s_webhook_guard",
    "google_ads_guard",
    "webhook_guard",
]

log = structlog.get_logger(__name__)

SIGNATURE_HEADER: Final = "X-C2S-Signature"
TOKEN_HEADER: Final = "X-Webhook-Token"  # noqa: S105 - a header name

_OPT: Final[dict[str, Any]] = {
    "exclude_from_auth": True,
    "exclude_from_idempotency": True,
    "lenient_content_type": True,
}
_C2S: Final = "c2s"
_GOOGLE_ADS: Final = "google_ads"
_MAX_REPORTED_ERRORS: Final = 20
_UNAUTHORIZED: Final = "Missing or invalid webhook signature or token"


class C2SWebhookAnswer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The C2S webhook answer (``docs/contract.md`` §1.9; ``rejected`` only when non-zero)."""

    status: str
    received: int
    processed: int
    duplicates: int
    rejected: int = 0


async def c2s_webhook_guard(
    connection: ASGIConnection[Any, Any, Any, Any],
    secrets: tuple[str, ...],
    *,
    tolerance_s: float,
) -> None:
    """Authenticate a C2S delivery by body signature or token, when a secret is configured.

    A valid token is checked first, from the headers (the request is then marked authenticated
    for the body guard: its body is not capped); the body is read only when a signature is
    presented (it is what the signature covers), and the handler's decode reuses the same bytes.

    Args:
        connection: The request.
        secrets: ``WEBHOOK_SECRET`` split (:func:`domain.signatures.parse_secrets`); empty: open.
        tolerance_s: ``WEBHOOK_SIGNATURE_TOLERANCE_S``.

    Raises:
        NotAuthorizedException: Neither a valid ``X-C2S-Signature`` nor a valid token.
    """
    if not secrets:
        return
    # The token first: it is verified from the headers, before the body is read, so the body
    # guard does not count the delivery among the unauthenticated bodies it caps.
    tokens = [
        value
        for value in (
            connection.headers.get(TOKEN_HEADER),
            connection.query_params.get("token"),
        )
        if value is not None
    ]
    if tokens and all(token_matches(value, secrets) for value in tokens):
        mark_authenticated(connection.scope)
        return
    signature = connection.headers.get(SIGNATURE_HEADER)
    signature_check: SignatureCheck | None = None
    if signature is not None and isinstance(connection, Request):
        signature_check = verify_signature(
            signature,
            await connection.body(),
            secrets,
            now=time.time(),
            tolerance_s=tolerance_s,
        )
        if signature_check is SignatureCheck.VALID:
            return
    # Which check failed, never what was presented.
    log.warning(
        "c2s_webhook_unauthorized",
        signature=signature_check.value if signature_check is not None else "absent",
        token="mismatch" if tokens else "absent",
    )
    raise NotAuthorizedException(_UNAUTHORIZED)


def google_ads_guard(connection: ASGIConnection[Any, Any, Any, Any], expected: str) -> None:
    """Check ``?google_key=`` against ``expected`` (``GOOGLE_ADS_WEBHOOK_KEY``; empty: 401).

    Raises:
        NotAuthorizedException: Missing or wrong key, or no key configured.
    """
    presented = connection.query_params.get("google_key")
    if not expected or presented is None or not token_matches(presented, (expected,)):
        log.warning("google_ads_unauthorized", key="mismatch" if presented else "absent")
        raise NotAuthorizedException("Unauthorized")


def webhook_guard(settings: Settings) -> Guard:
    """The guard of the webhook routes: the check named by the route's ``opt["webhook"]``.

    The secrets are read from ``settings`` once, here, not on every request.

    Raises (from the guard):
        NotAuthorizedException: The check failed, or the route names none.
    """
    c2s_secrets = parse_secrets(settings.webhook_secret.get())
    tolerance_s = settings.webhook_signature_tolerance_s
    google_key = settings.google_ads_webhook_key.get().strip()

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        kind = handler.opt.get("webhook")
        if kind == _C2S:
            await c2s_webhook_guard(connection, c2s_secrets, tolerance_s=tolerance_s)
        elif kind == _GOOGLE_ADS:
            google_ads_guard(connection, google_key)
        else:
            raise NotAuthorizedException("Unauthorized")

    return guard


def _trace_context() -> dict[str, str] | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


class WebhookController(Controller):
    """Inbound webhooks of C2S and Google Ads."""

    path = "/api/v1/webhooks"
    tags = ["webhooks"]  # noqa: RUF012 - Litestar reads class attributes

    @post(
        "/c2s",
        operation_id="receiveC2sWebhook",
        summary="Receive C2S lead events; each is stored durably (with its job) before the 200",
        description=(
            "Body: one event `{id, hook_action?, attributes:{updated_at, customer, ...}}`, an "
            "array of them, or `{hook_action, lead:{id, attributes}}`. `updated_at` is RFC 3339, "
            "`YYYY-MM-DD HH:MM:SS.fff +zzzz` or naive `YYYY-MM-DD HH:MM:SS.fff` (UTC); with the "
            "lead id it is the idempotency key, so redeliveries count as `duplicates`. Invalid "
            "events are skipped (`rejected`); 400 when nothing in the body is valid; 413 above "
            "`WEBHOOK_MAX_EVENTS` events or `WEBHOOK_MAX_BODY_BYTES` bytes. When "
            "`WEBHOOK_SECRET` is set, every delivery must carry a valid `X-C2S-Signature: "
            't=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>` (t within '
            "`WEBHOOK_SIGNATURE_TOLERANCE_S`) or the secret in `X-Webhook-Token` or `?token=`; "
            "else 401."
        ),
        status_code=200,
        opt={**_OPT, "webhook": _C2S},
        responses=problem_responses(400, 401, 413, 415, 429, 503),
    )
    async def c2s(
        self,
        intake: WebhookIntakeDep,
        # Any: the body is validated event by event in the domain, so that one bad event does
        # not sink the others; Litestar only decodes the JSON.
        data: Annotated[
            Any,
            Body(
                title="C2S webhook body",
                description="A C2S lead event, an array of events, or the TS-port envelope.",
            ),
        ],
        token: Annotated[
            str | None,
            QueryParameter(
                name="token",
                required=False,
                max_length=512,
                description="Webhook secret, for senders that cannot set headers.",
            ),
        ] = None,
        webhook_token: Annotated[
            str | None,
            HeaderParameter(
                name="X-Webhook-Token",
                required=False,
                max_length=512,
                description="Webhook secret (`WEBHOOK_SECRET`).",
            ),
        ] = None,
        signature: Annotated[
            str | None,
            HeaderParameter(
                name=SIGNATURE_HEADER,
                required=False,
                max_length=MAX_SIGNATURE_HEADER_LENGTH,
                description=(
                    '`t=<unix seconds>,v1=<hex HMAC-SHA256(WEBHOOK_SECRET, "<t>." + raw body)>`'
                ),
            ),
        ] = None,
    ) -> C2SWebhookAnswer:
        result = await intake.accept(data, _trace_context())
        if result.outcome == "too_many_events":
            log.info("c2s_webhook_too_many_events", received=result.received)
            raise HTTPException(
                status_code=413,
                detail=f"Too many events: at most {intake.max_events} per webhook body",
            )
        if result.outcome == "nothing_valid":
            errors = [
                {"key": r.field, "message": r.reason, "source": "body"}
                for r in result.rejected[:_MAX_REPORTED_ERRORS]
            ]
            log.info("c2s_webhook_rejected", rejected=len(result.rejected))
            raise ValidationException(detail="No valid event in the body", extra=errors)
        log.info(
            "c2s_webhook_received",
            received=result.received,
            processed=result.processed,
            duplicates=result.duplicates,
            rejected=len(result.rejected),
            rejected_fields=sorted({r.field for r in result.rejected}) or None,
        )
        return C2SWebhookAnswer(
            status="received",
            received=result.received,
            processed=result.processed,
            duplicates=result.duplicates,
            rejected=len(result.rejected),
        )

    @post(
        "/google-ads",
        operation_id="receiveGoogleAdsLead",
        summary="Create a C2S lead from a Google Ads lead form (once per Google lead id)",
        description=(
            "Requires `?google_key=` equal to `GOOGLE_ADS_WEBHOOK_KEY` (401 otherwise). Phone and "
            "e-mail are validated (at least one must be valid), the person is enriched "
            "best-effort, and a lead is created in C2S (never retried). A redelivery of the same "
            "`lead_id` answers `Lead already processed (duplicate)`."
        ),
        status_code=200,
        opt={**_OPT, "webhook": _GOOGLE_ADS},
        responses=problem_responses(400, 401, 413, 415, 429, 502, 503),
    )
    async def google_ads(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[GoogleAdsLead],
        google_ads: GoogleAdsDep,
        google_key: Annotated[
            str | None,
            QueryParameter(
                name="google_key",
                required=False,
                max_length=512,
                description="The shared key configured in the Google Ads lead form.",
            ),
        ] = None,
    ) -> GoogleAdsResult:
        result = await google_ads.accept(data, await request.body())
        log.info(
            "google_ads_lead",
            duplicate=result.message != "Lead created in C2S",
            c2s_lead_id=result.c2s_lead_id,
        )
        return result
