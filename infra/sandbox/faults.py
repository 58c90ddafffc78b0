"""Fault knobs and call counters of the sandbox upstreams.

Each upstream (``c2s``, ``diretrix``, ``work_api``) has one :class:`FaultConfig`, replaced as a
whole at run time (``POST /_sandbox/faults/{upstream}``; omitted fields take their defaults).
Every request draws from one seeded RNG, so a run with the same seed and the same request order
injects the same faults. The sandbox runs as a single Granian worker, so this state is simply
process memory.
"""

from __future__ import annotations

import random
import threading
from typing import Annotated, Literal

import msgspec

__all__ = [
    "NO_FAULTS",
    "UPSTREAMS",
    "CallCounters",
    "FaultConfig",
    "FaultDecision",
    "Faults",
    "SoftErrorKind",
    "Upstream",
    "soft_error_body",
]

Upstream = Literal["c2s", "diretrix", "work_api"]
UPSTREAMS: tuple[Upstream, ...] = ("c2s", "diretrix", "work_api")
SoftErrorKind = Literal["expired_token", "no_credits", "unknown_module", "not_found", "other"]

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Millis = Annotated[float, msgspec.Meta(ge=0.0, le=600_000.0)]


class FaultConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one upstream does wrong.

    Attributes:
        latency_ms: Added to every answer.
        jitter_ms: Up to this much more, uniformly drawn.
        error_rate: Probability of answering ``error_status`` with a text body.
        error_status: The status of injected errors (429 and 503 carry ``Retry-After``).
        retry_after_s: The ``Retry-After`` value sent with 429/503.
        timeout_rate: Probability of accepting the request and never answering (until the
            client goes away or ``hang_s`` passes, far beyond any client timeout).
        hang_s: How long a "never answering" request is held at most.
        soft_error_rate: Work API only: probability of an error body inside HTTP 200.
        soft_error_kind: Which soft error to answer.
        wrong_auth: Reject valid credentials (401; for the Work API the expired-token body).
    """

    latency_ms: Millis = 0.0
    jitter_ms: Millis = 0.0
    error_rate: Rate = 0.0
    error_status: Annotated[int, msgspec.Meta(ge=400, le=599)] = 500
    retry_after_s: Annotated[int, msgspec.Meta(ge=0, le=3600)] = 1
    timeout_rate: Rate = 0.0
    hang_s: Annotated[float, msgspec.Meta(gt=0.0, le=3600.0)] = 120.0
    soft_error_rate: Rate = 0.0
    soft_error_kind: SoftErrorKind = "expired_token"
    wrong_auth: bool = False


NO_FAULTS = FaultConfig()


class FaultDecision(msgspec.Struct, frozen=True):
    """What to do with one request."""

    delay_s: float
    action: Literal["pass", "hang", "error", "soft_error"]


_PASS = FaultDecision(0.0, "pass")


class Faults:
    """The current fault configuration of each upstream, and the seeded dice.

    Args:
        seed: Seed of the RNG that decides which requests fail.
    """

    def __init__(self, seed: int) -> None:
        self._seed = seed
        # Synthetic fault injection, not security: reproducibility is the point.
        self._rng = random.Random(seed)  # noqa: S311
        self._configs: dict[str, FaultConfig] = dict.fromkeys(UPSTREAMS, NO_FAULTS)
        self._lock = threading.Lock()

    def get(self, upstream: Upstream) -> FaultConfig:
        """The configuration of ``upstream``."""
        return self._configs[upstream]

    def all(self) -> dict[str, FaultConfig]:
        """Every upstream's configuration."""
        return dict(self._configs)

    def set(self, upstream: Upstream, config: FaultConfig) -> None:
        """Replace the configuration of ``upstream``."""
        self._configs[upstream] = config

    def reset(self) -> None:
        """No faults anywhere; the dice start again from the seed."""
        with self._lock:
            self._configs = dict.fromkeys(UPSTREAMS, NO_FAULTS)
            self._rng.seed(self._seed)

    def decide(self, config: FaultConfig) -> FaultDecision:
        """Roll the dice for one request under ``config``."""
        if config is NO_FAULTS:
            return _PASS
        with self._lock:
            rng = self._rng
            delay = config.latency_ms
            if config.jitter_ms:
                delay += rng.uniform(0.0, config.jitter_ms)
            if config.timeout_rate and rng.random() < config.timeout_rate:
                action: Literal["pass", "hang", "error", "soft_error"] = "hang"
            elif config.error_rate and rng.random() < config.error_rate:
                action = "error"
            elif config.soft_error_rate and rng.random() < config.soft_error_rate:
                action = "soft_error"
            else:
                action = "pass"
        return FaultDecision(delay / 1000.0, action)


class CallCounters:
    """Requests received, per upstream and route template (``GET /api``...)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def hit(self, upstream: str, route: str) -> None:
        """Count one request."""
        key = (upstream, route)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{upstream: {route: count}}`` for every upstream (routes never hit are absent)."""
        out: dict[str, dict[str, int]] = {name: {} for name in UPSTREAMS}
        with self._lock:
            for (upstream, route), count in self._counts.items():
                out.setdefault(upstream, {})[route] = count
        return out

    def reset(self) -> None:
        """Back to zero."""
        with self._lock:
            self._counts.clear()


_SOFT_BODIES: dict[str, bytes] = {
    "expired_token": msgspec.json.encode(
        {
            "status": 403,
            "statusMsg": "Token inválido ou expirado",
            "reason": "O token informado não é válido ou expirou. Renove o seu acesso.",
        }
    ),
    "no_credits": msgspec.json.encode(
        {"code": 429, "message": "not enough credits", "required": 1, "remaining": 0}
    ),
    "not_found": msgspec.json.encode(
        {
            "status": 404,
            "statusMsg": "Registro não encontrado",
            "reason": "Nenhum registro encontrado para a consulta informada",
        }
    ),
    "other": msgspec.json.encode({"erro": "Falha temporária na consulta, tente novamente"}),
}


def soft_error_body(kind: SoftErrorKind, module: str = "cpf") -> bytes:
    """The Work API body (served with HTTP 200) of a soft error.

    Args:
        kind: Which error.
        module: The ``modulo`` asked for (named in the unknown-module message).

    Returns:
        The encoded JSON body.
    """
    if kind == "unknown_module":
        return msgspec.json.encode(
            {
                "status": 403,
                "statusMsg": f"Módulo {module} inexistente para a rota",
                "reason": "Verifique os módulos disponíveis para o seu plano",
            }
        )
    return _SOFT_BODIES[kind]
