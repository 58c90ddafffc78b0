"""The upstream sandbox (simulated C2S, Diretrix and Work API) as the tests run it.

One sandbox serves the whole test run (the ``sandbox_url`` fixture of ``tests/conftest.py``);
its state is reset before each test that uses it. :data:`PEOPLE` computes in-process what the
sandbox serves, from the same seed and registry size.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from infra.sandbox.people import SyntheticPeople
from tests.support.processes import SANDBOX_FACTORY, granian_server

if TYPE_CHECKING:
    import contextlib

    import aiohttp

__all__ = [
    "C2S_TOKEN",
    "DIRETRIX_PASS",
    "DIRETRIX_USER",
    "PEOPLE",
    "SANDBOX_REGISTRY_SIZE",
    "SANDBOX_SEED",
    "WEBHOOK_SECRET",
    "WORK_API_TOKEN",
    "SandboxAdmin",
    "sandbox_env",
    "serve_sandbox",
]

SANDBOX_SEED = 5151
SANDBOX_REGISTRY_SIZE = 500
C2S_TOKEN = "test-c2s-token"
DIRETRIX_USER = "test-user"
DIRETRIX_PASS = "test-pass"
WORK_API_TOKEN = "test-work-token-s3cr3t"
WEBHOOK_SECRET = "test-webhook-secret"

PEOPLE = SyntheticPeople(SANDBOX_SEED, registry_size=SANDBOX_REGISTRY_SIZE)


def sandbox_env() -> dict[str, str]:
    """The sandbox's environment: this process's, plus its seed and credentials."""
    return {
        **os.environ,
        "SANDBOX_SEED": str(SANDBOX_SEED),
        "SANDBOX_C2S_TOKEN": C2S_TOKEN,
        "SANDBOX_DIRETRIX_USER": DIRETRIX_USER,
        "SANDBOX_DIRETRIX_PASS": DIRETRIX_PASS,
        "SANDBOX_WORK_API_TOKEN": WORK_API_TOKEN,
        "SANDBOX_REGISTRY_SIZE": str(SANDBOX_REGISTRY_SIZE),
    }


def serve_sandbox() -> contextlib.AbstractContextManager[str]:
    """A sandbox under Granian (through the launcher) until the block ends; yields its URL."""
    return granian_server(SANDBOX_FACTORY, env=sandbox_env(), ready_path="/_sandbox/health")


class SandboxAdmin:
    """Calls to the sandbox's ``/_sandbox`` helpers."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def _json(self, method: str, path: str, body: Any = None) -> Any:  # Any: JSON
        async with self.session.request(method, self.base_url + path, json=body) as resp:
            if resp.status == 204:
                return None
            assert resp.status < 300, (resp.status, await resp.text())
            return await resp.json()

    async def reset(self) -> None:
        """Forget leads, messages, faults and counters."""
        await self._json("POST", "/_sandbox/reset")

    async def set_faults(self, upstream: str, **knobs: Any) -> dict[str, Any]:
        """Replace the faults of ``upstream``."""
        result: dict[str, Any] = await self._json("POST", f"/_sandbox/faults/{upstream}", knobs)
        return result

    async def clear_faults(self) -> None:
        """No faults anywhere."""
        await self._json("DELETE", "/_sandbox/faults")

    async def configure(self, **knobs: Any) -> dict[str, Any]:
        """``POST /_sandbox/config``: the simulated C2S's knobs (e.g. ``update_webhook_url``)."""
        result: dict[str, Any] = await self._json("POST", "/_sandbox/config", knobs)
        return result

    async def counters(self) -> dict[str, dict[str, int]]:
        """Calls received per upstream and route."""
        result: dict[str, dict[str, int]] = await self._json("GET", "/_sandbox/counters")
        return result

    async def count(self, upstream: str, route: str) -> int:
        """Calls received by one route."""
        return (await self.counters()).get(upstream, {}).get(route, 0)

    async def create_lead(self, person_index: int | None = None, **body: Any) -> dict[str, Any]:
        """``POST /_sandbox/leads``: a C2S lead (for synthetic person ``person_index``, whose
        phone and e-mail Diretrix then knows)."""
        if person_index is not None:
            body["person_index"] = person_index
        result: dict[str, Any] = await self._json("POST", "/_sandbox/leads", body)
        return result

    async def messages(self, lead_id: str) -> list[dict[str, Any]]:
        """Messages a lead received."""
        result = await self._json("GET", f"/_sandbox/leads/{lead_id}/messages")
        messages: list[dict[str, Any]] = result["messages"]
        return messages
