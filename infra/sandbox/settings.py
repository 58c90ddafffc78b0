"""Sandbox configuration, read from ``SANDBOX_*`` environment variables.

=========================  ======================  ==========================================
variable                   default                 meaning
=========================  ======================  ==========================================
``SANDBOX_PORT``           ``8099``                port (:func:`~infra.sandbox.app.run_sandbox`)
``SANDBOX_SEED``           ``20251122``            seed of the synthetic people and the faults
``SANDBOX_C2S_TOKEN``      ``sandbox-c2s-token``   C2S bearer token
``SANDBOX_DIRETRIX_USER``  ``sandbox``             Diretrix Basic user
``SANDBOX_DIRETRIX_PASS``  ``sandbox-pass``        Diretrix Basic password
``SANDBOX_WORK_API_TOKEN`` ``sandbox-work-token``  Work API ``token`` query parameter
``SANDBOX_REGISTRY_SIZE``  ``10000``               people Diretrix can find by phone/e-mail
=========================  ======================  ==========================================
"""

from __future__ import annotations

import os

import msgspec

__all__ = ["DEFAULT_PORT", "SandboxSettings", "sandbox_settings_from_env"]

DEFAULT_PORT = 8099
_DEFAULT_SEED = 20251122
# Well-known sandbox credentials: they protect nothing, they let tests exercise auth failures.
_DEFAULT_C2S_TOKEN = "sandbox-c2s-token"  # noqa: S105
_DEFAULT_DIRETRIX_USER = "sandbox"
_DEFAULT_DIRETRIX_PASS = "sandbox-pass"  # noqa: S105
_DEFAULT_WORK_API_TOKEN = "sandbox-work-token"  # noqa: S105


class SandboxSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Sandbox configuration (the module docstring lists the environment variables)."""

    port: int = DEFAULT_PORT
    seed: int = _DEFAULT_SEED
    c2s_token: str = _DEFAULT_C2S_TOKEN
    diretrix_user: str = _DEFAULT_DIRETRIX_USER
    diretrix_pass: str = _DEFAULT_DIRETRIX_PASS
    work_api_token: str = _DEFAULT_WORK_API_TOKEN
    registry_size: int = 10_000

    def __repr__(self) -> str:
        return f"SandboxSettings(port={self.port}, seed={self.seed})"


def sandbox_settings_from_env(environ: dict[str, str] | None = None) -> SandboxSettings:
    """Read :class:`SandboxSettings` from ``SANDBOX_*`` variables.

    Raises:
        ValueError: When a numeric variable is not an integer.
    """
    env = dict(os.environ if environ is None else environ)
    return SandboxSettings(
        port=int(env.get("SANDBOX_PORT", DEFAULT_PORT)),
        seed=int(env.get("SANDBOX_SEED", _DEFAULT_SEED)),
        c2s_token=env.get("SANDBOX_C2S_TOKEN", _DEFAULT_C2S_TOKEN),
        diretrix_user=env.get("SANDBOX_DIRETRIX_USER", _DEFAULT_DIRETRIX_USER),
        diretrix_pass=env.get("SANDBOX_DIRETRIX_PASS", _DEFAULT_DIRETRIX_PASS),
        work_api_token=env.get("SANDBOX_WORK_API_TOKEN", _DEFAULT_WORK_API_TOKEN),
        registry_size=int(env.get("SANDBOX_REGISTRY_SIZE", 10_000)),
    )
