"""Feature flags: the runtime toggles' names, defaults and meaning, as pure data.

A flag changes behaviour without a deploy (ADR 0007). Each has a default here, which a deployment
may change through ``FLAG_<NAME>`` settings, and an operator may override at run time through
``PUT /api/v1/admin/flags/{name}`` or ``c2s-api flags set`` (stored in Redis, read through a
per-process cache by ``infra.flags.FlagStore``). The domain only ever asks
:class:`domain.ports.Flags` whether a flag is on; it never waits for storage to answer.

Every flag is a kill switch that defaults to ON: turning one off degrades one feature and never
makes the service fail in a new way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import msgspec

from domain.errors import DependencyUnavailable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from domain.ports import Flags

__all__ = [
    "DEFAULTS",
    "DISABLED_RETRY_AFTER_S",
    "FLAG_SPECS",
    "FeatureDisabled",
    "Flag",
    "FlagOverride",
    "FlagSpec",
    "FlagState",
    "StaticFlags",
    "feature_disabled_detail",
    "require_enabled",
    "spec_of",
]


class Flag(enum.StrEnum):
    """The known flags. The value is the name used in the API, the CLI, Redis and metrics."""

    SEND_C2S_MESSAGES = "send_c2s_messages"
    USE_DOSSIER_CACHE = "use_dossier_cache"
    ENABLE_BATCH = "enable_batch"


@dataclass(frozen=True, slots=True)
class FlagSpec:
    """What a flag does.

    Attributes:
        flag: The flag.
        default: Its value when nothing overrides it.
        description: What it controls (shown by the API and the CLI).
        when_off: What clients observe while it is off.
    """

    flag: Flag
    default: bool
    description: str
    when_off: str


FLAG_SPECS: Final[tuple[FlagSpec, ...]] = (
    FlagSpec(
        flag=Flag.SEND_C2S_MESSAGES,
        default=True,
        description="Post the formatted enrichment message to the lead in C2S.",
        when_off=(
            "Leads are still resolved, fetched, stored and formatted; the message is not posted. "
            "/c2s/enrich answers message_sent=false, /leads/process says so in its message."
        ),
    ),
    FlagSpec(
        flag=Flag.USE_DOSSIER_CACHE,
        default=True,
        description="Read and write Work API dossiers in the shared Redis cache.",
        when_off=(
            "Every dossier is fetched from the Work API (slower, and each call is paid); "
            "nothing is written to the cache."
        ),
    ),
    FlagSpec(
        flag=Flag.ENABLE_BATCH,
        default=True,
        description="Accept POST /api/v1/enrich/batch.",
        when_off="POST /api/v1/enrich/batch answers 503 problem+json with Retry-After.",
    ),
)

DEFAULTS: Final[Mapping[str, bool]] = MappingProxyType(
    {spec.flag.value: spec.default for spec in FLAG_SPECS}
)
"""Flag name -> built-in default (before any ``FLAG_*`` setting or runtime override)."""

DISABLED_RETRY_AFTER_S: Final = 60.0
"""``Retry-After`` of an operation refused because its flag is off: long enough not to invite a
retry storm, short enough that clients notice the switch going back on."""

_SPECS: Final = {spec.flag.value: spec for spec in FLAG_SPECS}


def spec_of(name: str) -> FlagSpec | None:
    """The spec of flag ``name``, or ``None`` for a name no flag has."""
    return _SPECS.get(name)


class StaticFlags:
    """Flags fixed at construction: the defaults, optionally overridden.

    The :class:`~domain.pipeline.Enricher` uses it when no flag store is given (unit tests, tools
    that run without Redis), so behaviour without one is exactly the documented defaults.

    Args:
        overrides: Flag name -> value, applied over :data:`DEFAULTS`.

    Raises:
        KeyError: An override names no known flag.
    """

    __slots__ = ("_values",)

    def __init__(self, overrides: Mapping[str, bool] | None = None) -> None:
        values = dict(DEFAULTS)
        for name, value in (overrides or {}).items():
            if name not in values:
                raise KeyError(name)
            values[name] = value
        self._values = values

    def enabled(self, name: str) -> bool:
        """Whether flag ``name`` is on.

        Raises:
            KeyError: ``name`` is not a known flag (a programming error).
        """
        return self._values[name]


class FeatureDisabled(DependencyUnavailable):
    """An operation was refused because an operator switched its flag off (HTTP 503).

    A subclass of :class:`~domain.errors.DependencyUnavailable`, so the one error table answers
    503 with ``Retry-After`` and ``dependency`` = ``feature:<flag>``: the refusal is temporary and
    says which switch caused it.
    """

    def __init__(self, flag: str, retry_after: float = DISABLED_RETRY_AFTER_S) -> None:
        super().__init__(f"feature:{flag}", feature_disabled_detail(flag), retry_after)
        self.flag = flag


def feature_disabled_detail(flag: str) -> str:
    """The client-visible text of a refusal by a switched-off flag (the 503's ``detail``)."""
    return f"Feature '{flag}' is switched off"


def require_enabled(flags: Flags, flag: Flag) -> None:
    """Raise :class:`FeatureDisabled` unless ``flag`` is on.

    Raises:
        FeatureDisabled: The flag is off.
    """
    if not flags.enabled(flag):
        raise FeatureDisabled(flag.value)


class FlagOverride(msgspec.Struct, frozen=True, kw_only=True):
    """A runtime override, as stored in Redis.

    Attributes:
        enabled: The value it imposes.
        changed_at: Epoch seconds of the change.
        changed_by: Who changed it: ``api-key:<key id>`` or ``cli`` (never a key or a person's
            data).
    """

    enabled: bool
    changed_at: float
    changed_by: str


class FlagState(msgspec.Struct, frozen=True, kw_only=True):
    """A flag as this process applies it.

    Attributes:
        name: The flag name.
        enabled: The effective value.
        default: The value without an override.
        override: The runtime override, if any.
    """

    name: str
    enabled: bool
    default: bool
    override: FlagOverride | None = None
