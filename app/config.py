"""Settings: one frozen Struct read from the environment once, at start-up.

Every variable has a working local default (the "embedded default": local PostgreSQL and Redis,
the in-process sandbox for upstreams), so ``c2s-api serve`` runs on a fresh machine. Invalid
values stop the process with a one-line message naming the variable. Secrets are wrapped in
:class:`Secret`, whose ``repr``/``str`` never show the value.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn
from urllib.parse import urlsplit, urlunsplit

import msgspec

from domain.signatures import parse_secrets

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ConfigError",
    "Secret",
    "Settings",
    "load_settings",
    "parse_hmac_keys",
    "redact_url",
]


class ConfigError(Exception):
    """Raised for an invalid environment; the message names the variable."""


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """Return the wrapped value (only where it is actually sent)."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
HttpUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://\S+$")]
PostgresUrl = Annotated[str, msgspec.Meta(pattern=r"^postgres(ql)?://\S+$")]
RedisUrl = Annotated[str, msgspec.Meta(pattern=r"^rediss?(\+cluster)?://\S+$")]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Process-wide configuration. Field ``foo_bar`` is read from env ``FOO_BAR``."""

    # --- server ---------------------------------------------------------------------------
    port: Port = 8080
    host: str = "127.0.0.1"
    web_workers: PositiveInt = 1
    workers_kill_timeout: PositiveInt = 20
    environment: Literal["development", "test", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    service_name: str = "c2s-api"

    # --- PostgreSQL -------------------------------------------------------------------------
    database_url: PostgresUrl = "postgresql://postgres@127.0.0.1:5432/c2s_api"
    db_pool_min: NonNegInt = 2
    db_pool_max: PositiveInt = 10
    db_statement_timeout_ms: PositiveInt = 2000
    db_connect_timeout_s: PositiveFloat = 2.0
    # Optional streaming read replica (ADR 0015): lookups, name search and get_party read from it
    # while a check every REPLICA_CHECK_S finds it at most REPLICA_MAX_LAG_S behind; otherwise,
    # and for writes and the reads that must see them, the primary. Empty: no replica.
    database_read_url: Annotated[str, msgspec.Meta(pattern=r"^(postgres(ql)?://\S+)?$")] = ""
    replica_check_s: PositiveFloat = 1.0
    replica_max_lag_s: PositiveFloat = 5.0

    # --- Redis ------------------------------------------------------------------------------
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    redis_key_prefix: str = "c2s:"
    redis_timeout_s: PositiveFloat = 0.25
    redis_max_connections: PositiveInt = 512
    # redis+cluster:// only: extra attempts of a failed command on a refreshed slot map (ADR 0014).
    redis_cluster_retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 2

    # --- shared caches (Redis) ---------------------------------------------------------------
    # "kid:secret[,kid:secret]": the first signs new entries, every listed key verifies (rotation).
    cache_hmac_keys: Secret = msgspec.field(
        default_factory=lambda: Secret("dev:development-only-cache-key")
    )
    # Keys Redis entries by a keyed digest of the identifier, so no raw CPF/e-mail sits in Redis.
    cache_key_salt: Secret = msgspec.field(
        default_factory=lambda: Secret("development-only-key-salt")
    )
    work_api_cache_ttl_s: PositiveInt = 3600
    # Each process keeps hot Work API bodies in memory too (ADR 0010): at most this many MB and
    # entries (0 MB: off, every read goes to Redis). A body rewritten by another process is
    # served stale for at most DOSSIER_LOCAL_CACHE_STALE_S, also when the invalidation channel
    # is lost (memory then stops answering until it is back).
    dossier_local_cache_mb: Annotated[float, msgspec.Meta(ge=0)] = 24.0
    dossier_local_cache_entries: NonNegInt = 20_000
    dossier_local_cache_stale_s: Annotated[float, msgspec.Meta(gt=0, le=10)] = 1.0
    contact_cache_ttl_s: PositiveInt = 86400
    contact_cache_negative_ttl_s: PositiveInt = 3600
    lead_lock_ttl_s: PositiveInt = 300
    lead_replay_ttl_s: PositiveInt = 60
    recent_cpf_ttl_s: PositiveInt = 60
    idempotency_ttl_s: PositiveInt = 86400
    idempotency_lock_ttl_s: PositiveInt = 120
    # Single-flight of cache misses across processes: the fill lock outlives a live holder's Work
    # API call; another process waits at most FILL_WAIT_S for the holder's result.
    fill_lock_ttl_s: PositiveFloat = 20.0
    fill_wait_s: PositiveFloat = 5.0

    # --- readiness --------------------------------------------------------------------------
    ready_timeout_s: PositiveFloat = 1.0

    # --- upstreams (empty base URL = the embedded sandbox) -----------------------------------
    c2s_base_url: Annotated[str, msgspec.Meta(pattern=r"^(https?://\S+)?$")] = ""
    c2s_token: Secret = msgspec.field(default_factory=lambda: Secret(""))
    c2s_timeout_s: PositiveFloat = 10.0
    c2s_connect_timeout_s: PositiveFloat = 2.0
    diretrix_base_url: Annotated[str, msgspec.Meta(pattern=r"^(https?://\S+)?$")] = ""
    diretrix_user: str = ""
    diretrix_pass: Secret = msgspec.field(default_factory=lambda: Secret(""))
    diretrix_timeout_s: PositiveFloat = 8.0
    diretrix_connect_timeout_s: PositiveFloat = 2.0
    work_api_base_url: Annotated[str, msgspec.Meta(pattern=r"^(https?://\S+)?$")] = ""
    work_api_token: Secret = msgspec.field(default_factory=lambda: Secret(""))
    work_api_timeout_s: PositiveFloat = 15.0
    work_api_connect_timeout_s: PositiveFloat = 2.0
    upstream_max_connections: PositiveInt = 100
    sandbox_port: Port = 8099
    sandbox_seed: NonNegInt = 20251122

    # --- webhooks ---------------------------------------------------------------------------
    # "current[,previous...]": every listed secret verifies signatures and tokens (rotation).
    # Set = enforced on every C2S delivery; required in production.
    webhook_secret: Secret = msgspec.field(default_factory=lambda: Secret(""))
    # How far an X-C2S-Signature timestamp may be from the receiver's clock (replay window).
    webhook_signature_tolerance_s: PositiveInt = 300
    # Events per C2S webhook body (413 above), and the webhook body limit (413 above).
    webhook_max_events: PositiveInt = 100
    webhook_max_body_bytes: PositiveInt = 1024 * 1024
    # ?google_key= of the Google Ads lead form; unset = every Google Ads request is 401.
    google_ads_webhook_key: Secret = msgspec.field(default_factory=lambda: Secret(""))
    c2s_default_seller_id: str = ""
    c2s_description_max_length: PositiveInt = 5000

    # --- worker (c2s-api worker) ------------------------------------------------------------
    # Jobs one worker runs at once. A job mostly waits on the upstreams and PostgreSQL, so 16
    # overlap well within the default pool (each job holds a connection only per statement or
    # store transaction); docs/adr/0013-queue-throughput.md.
    worker_concurrency: PositiveInt = 16
    worker_grace_s: PositiveFloat = 20.0
    worker_lease_timeout_s: PositiveFloat = 30.0
    worker_metrics_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464
    # How long transient failures of a webhook job are retried (exponential backoff from 5 s,
    # capped at 30 min, full jitter) before it becomes a dead letter; from arrival or redrive.
    worker_retry_budget_s: Annotated[float, msgspec.Meta(ge=60)] = 6 * 3600.0
    # The backoff's first cap (doubling per attempt up to 30 min). Smaller only where time is
    # compressed (chaos tests, staging drills).
    worker_retry_base_s: Annotated[float, msgspec.Meta(ge=0.1, le=300)] = 5.0
    # Where the doubling stops (the longest wait between two attempts).
    worker_retry_max_s: Annotated[float, msgspec.Meta(ge=0.1, le=86_400)] = 1800.0

    # --- domain -----------------------------------------------------------------------------
    income_multiplier: PositiveFloat = 1.9

    # --- rate limits (limits syntax: "20/2second;1000/minute"; empty = no limit) -------------
    # The reference meant 10 req/s with bursts of 20 per client: 20 per 2 s, sliding.
    rate_limit_ip: str = "20/2second"
    rate_limit_key: str = "50/second;2000/minute"
    rate_limit_global: str = "2000/second"
    rate_limit_strategy: Literal["sliding-window-counter"] = "sliding-window-counter"
    # Each process decides from a local view of the shared counters, synchronised with Redis in
    # one call every RATE_LIMIT_SYNC_MS (ADR 0009); 0 = one Redis round trip per request.
    rate_limit_sync_ms: Annotated[int, msgspec.Meta(ge=0, le=100)] = 50
    # Limits (tier, identity, quota) the local view keeps at most per process (LRU).
    rate_limit_local_entries: Annotated[int, msgspec.Meta(ge=100)] = 10_000
    # Failed authentications per client IP (a flood of guessed keys); past it, 429 before any
    # database work.
    auth_failure_limit: str = "20/minute"
    # Proxies whose Fly-Client-IP / X-Forwarded-For entries are believed (CIDRs); the client is
    # the right-most X-Forwarded-For address that is not one of them.
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")

    # --- API keys ---------------------------------------------------------------------------
    api_key_cache_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=5)] = 2.0

    # --- HTTP edge --------------------------------------------------------------------------
    max_body_bytes: PositiveInt = 5 * 1024 * 1024
    # Total time a request may take to deliver its body (408 and the connection closed after).
    body_read_timeout_s: PositiveFloat = 10.0
    # Per process: request bodies being received before any API key authenticated them. Above
    # it such requests get 503 at once. Keep it below Granian's --backpressure (256), so that
    # stalled bodies can never hold every request slot of a worker.
    max_pending_bodies: PositiveInt = 128
    cors_allow_origins: tuple[str, ...] = ()

    # --- feature flags ----------------------------------------------------------------------
    # Defaults of the runtime toggles of domain/flags.py (FLAG_<NAME>=true|false); operators
    # override them at run time (admin API or `c2s-api flags`), see ADR 0007.
    flag_send_c2s_messages: bool = True
    flag_use_dossier_cache: bool = True
    flag_enable_batch: bool = True
    # How stale a worker's view of the overrides may get (one Redis read per TTL per process).
    flag_cache_ttl_s: Annotated[float, msgspec.Meta(gt=0, le=30)] = 2.0
    # --- end feature flags ------------------------------------------------------------------

    # --- backups ----------------------------------------------------------------------------
    # Where `c2s-api backup` writes when --out is not given (empty: --out is required).
    backup_dir: str = ""

    # --- bulk-job callbacks (c2s-api worker; docs/callbacks.md) -----------------------------
    # Per attempt: the whole POST (connect, send, answer) must end within this.
    callback_timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0
    # First cap of the retry backoff (doubling per attempt up to 1 h, full jitter, for 24 h
    # after the first attempt). Smaller only where time is compressed (tests, drills).
    callback_retry_base_s: Annotated[float, msgspec.Meta(ge=0.01, le=600)] = 10.0
    # Deliveries one worker posts at once, and how often it looks for due ones when idle.
    callback_concurrency: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    callback_poll_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    # --- usage and paid-call quotas -----------------------------------------------------------
    # Paid calls are counted in memory and written to core.usage_daily every USAGE_FLUSH_MS
    # (one statement), and at shutdown.
    usage_flush_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 1000
    # The tenant label of paid_calls_total & co.: "a,b,c" = only these tenants by name; empty =
    # the first USAGE_METRIC_TENANTS_MAX tenants each process sees. Every other one: "other".
    usage_metric_tenants: str = ""
    usage_metric_tenants_max: Annotated[int, msgspec.Meta(ge=0, le=200)] = 20
    # --- audit trail (docs/security.md, "Audit trail") --------------------------------------
    # Buffered records are written at least this often (one INSERT per flush).
    audit_flush_ms: Annotated[int, msgspec.Meta(ge=10, le=60_000)] = 200
    # ... or as soon as this many are waiting.
    audit_batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    # Records kept in memory while PostgreSQL cannot take them; past it the oldest are dropped.
    audit_buffer_max: Annotated[int, msgspec.Meta(ge=100)] = 100_000
    # Months of audit records kept (whole monthly partitions are dropped by the retention job).
    audit_retention_months: Annotated[int, msgspec.Meta(ge=1)] = 24
    # --- match threshold --------------------------------------------------------------------
    # Default min_likelihood of the lookups, batch and /leads/process: a CPF resolved from a
    # phone/e-mail with a lower name-match score is neither enriched nor messaged (0: all are).
    min_likelihood: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    # --- bulk enrichment jobs (POST /api/v1/enrich/jobs) -------------------------------------
    # Items per job, and the body limit of that route alone (10,000 items must fit).
    bulk_max_items: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 10_000
    bulk_max_body_bytes: PositiveInt = 16 * 1024 * 1024
    # Per `c2s-api worker`: bulk items in flight at once (apart from the webhook jobs'
    # WORKER_CONCURRENCY); across all workers: a tenant's items in flight at once.
    bulk_concurrency: Annotated[int, msgspec.Meta(ge=0, le=256)] = 8
    bulk_tenant_concurrency: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 8
    # A claimed item's lease (renewed while it runs): a killed worker's items are claimed again
    # after it. Idle workers look for new items every BULK_POLL_INTERVAL_S.
    bulk_lease_s: Annotated[float, msgspec.Meta(ge=1, le=600)] = 30.0
    bulk_poll_interval_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    # Runs of one item before a transient failure (upstream down) is its final outcome.
    bulk_item_attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    # --- data-subject rights and retention (LGPD; docs/security.md) -------------------------
    # Days during which a person erased at their request is not bought again (without consent).
    erasure_hold_days: NonNegInt = 180
    # Parties not refreshed for this long are purged; raw upstream payloads older than
    # raw_retention_days (audit partitions: audit_retention_months, above).
    retention_days: PositiveInt = 730
    raw_retention_days: PositiveInt = 90
    # Rows per purge transaction, and when `c2s-api worker` runs the purge (cron, UTC).
    retention_batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    # Bulk jobs (their items: identifiers and results) are purged this long after they ended.
    bulk_retention_days: PositiveInt = 30
    retention_cron: str = "17 3 * * *"


_SECRET_FIELDS = frozenset(
    name
    for name, hint in Settings.__annotations__.items()
    if hint in ("Secret", Secret)  # annotations are strings under `from __future__`
)


def _coerce(name: str, raw: str) -> Any:  # Any: the value is validated by msgspec.convert below
    if name in _SECRET_FIELDS:
        return Secret(raw)
    if name in ("cors_allow_origins", "trusted_proxies"):
        return tuple(o.strip() for o in raw.split(",") if o.strip())
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default: ``os.environ``).

    Raises:
        ConfigError: naming the offending variable, without echoing secret values.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        var = name.upper()
        if var in env:
            values[name] = _coerce(name, env[var])
    if "port" not in values and "PORT" not in env and "GRANIAN_PORT" in env:
        values["port"] = env["GRANIAN_PORT"]
    try:
        settings = msgspec.convert(values, Settings, strict=False, dec_hook=lambda _t, v: v)
    except msgspec.ValidationError as exc:
        # msgspec names the path as `$.field`; report it as the environment variable.
        message = str(exc)
        field = message.rsplit("$.", 1)[-1].split("[", 1)[0].strip("`' ") if "$." in message else ""
        var = field.upper() or "environment"
        reason = message.split(" - at ", 1)[0]
        raise ConfigError(f"invalid configuration: {var}: {reason}") from None
    if not _parse_keys_ok(settings.cache_hmac_keys.get()):
        raise ConfigError(
            "invalid configuration: CACHE_HMAC_KEYS: expected kid:secret[,kid:secret], "
            "secrets of at least 16 characters"
        )
    if settings.environment == "production" and (
        settings.cache_hmac_keys.get().startswith("dev:")
        or settings.cache_key_salt.get().startswith("development-only")
    ):
        raise ConfigError(
            "invalid configuration: CACHE_HMAC_KEYS: production needs real keys "
            "(and CACHE_KEY_SALT)"
        )
    _check_webhook_secrets(settings)
    if not _cron_ok(settings.retention_cron):
        raise ConfigError("invalid configuration: RETENTION_CRON: expected a cron expression")
    for var, spec in (
        ("RATE_LIMIT_IP", settings.rate_limit_ip),
        ("RATE_LIMIT_KEY", settings.rate_limit_key),
        ("RATE_LIMIT_GLOBAL", settings.rate_limit_global),
        ("AUTH_FAILURE_LIMIT", settings.auth_failure_limit),
    ):
        if spec.strip() and not _limits_ok(spec):
            raise ConfigError(f"invalid configuration: {var}: expected e.g. '10/second;100/minute'")
    for cidr in settings.trusted_proxies:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError("invalid configuration: TRUSTED_PROXIES: not a CIDR list") from None
    if settings.db_pool_min > settings.db_pool_max:
        raise ConfigError("invalid configuration: DB_POOL_MIN: must not exceed DB_POOL_MAX")
    _check_redis_url(settings.redis_url)
    return settings


def _check_redis_url(url: str) -> None:
    from infra.redisclient import is_cluster_url, parse_cluster_url

    if not is_cluster_url(url):
        return
    try:
        parse_cluster_url(url)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: REDIS_URL: {exc}") from None


_MIN_WEBHOOK_SECRET_LENGTH = 16


def _check_webhook_secrets(settings: Settings) -> None:
    """Webhook secrets are long enough when set, and set in production."""
    raw = settings.webhook_secret.get()
    secrets = parse_secrets(raw)
    if raw.strip() and (
        not secrets or any(len(secret) < _MIN_WEBHOOK_SECRET_LENGTH for secret in secrets)
    ):
        raise ConfigError(
            "invalid configuration: WEBHOOK_SECRET: expected secret[,previous-secret], "
            f"secrets of at least {_MIN_WEBHOOK_SECRET_LENGTH} characters"
        )
    if settings.environment != "production":
        return
    if not secrets:
        raise ConfigError(
            "invalid configuration: WEBHOOK_SECRET: required in production "
            "(the C2S webhook must be authenticated)"
        )
    if not settings.google_ads_webhook_key.get().strip():
        raise ConfigError(
            "invalid configuration: GOOGLE_ADS_WEBHOOK_KEY: required in production "
            "(the Google Ads webhook must be authenticated)"
        )


def parse_hmac_keys(raw: str) -> list[tuple[str, bytes]]:
    """Split ``kid:secret[,kid:secret]`` into ``[(kid, secret), ...]``, current key first."""
    keys: list[tuple[str, bytes]] = []
    for part in raw.split(","):
        kid, _, secret = part.strip().partition(":")
        keys.append((kid, secret.encode()))
    return keys


_CRON_FIELD = r"[0-9A-Za-z*/,\-]+"
_CRON = re.compile(rf"^\s*{_CRON_FIELD}(\s+{_CRON_FIELD}){{4}}\s*$")


def _cron_ok(expression: str) -> bool:
    """Five cron fields (minute hour day month weekday); pgqueuer checks the values."""
    return _CRON.match(expression) is not None


def _limits_ok(spec: str) -> bool:
    from limits import parse_many

    try:
        parse_many(spec)
    except ValueError:
        return False
    return True


def _parse_keys_ok(raw: str) -> bool:
    try:
        keys = parse_hmac_keys(raw)
    except ValueError:
        return False
    kids = [kid for kid, _ in keys]
    return (
        bool(keys)
        and len(set(kids)) == len(kids)
        and all(kid.isalnum() and len(secret) >= 16 for kid, secret in keys)
    )


def settings_or_exit(environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings or stop the process with a one-line message (exit status 2)."""
    try:
        return load_settings(environ)
    except ConfigError as exc:
        _die(str(exc))


def _die(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(2)
