"""The tenant a request acts for, visible to every layer below the HTTP edge.

The auth middleware sets :data:`current_tenant` from the verified API key for the duration of
one request; storage adapters read it to scope every query (OWASP API1, broken object level
authorization: a party stored for tenant A must never be readable with a key of tenant B).

A :class:`contextvars.ContextVar` rather than a parameter threaded through every use case: the
value is set once at the edge and read once at the adapter, and asyncio copies the context into
tasks created during the request, so work fanned out by a handler (``asyncio.gather``) keeps the
tenant too. Outside a request (CLI, worker, tests) it is ``None`` unless code sets it.

:data:`current_caller` carries the rest of who is asking (key id, request id, the key's daily
paid-call quota) for the audit trail and the usage meter; the worker sets it when it acts for a
key (bulk jobs), so what it does is accounted to that key as a request would be.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["Caller", "caller_scope", "current_caller", "current_tenant", "tenant_scope"]


class Caller(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Who the current work is done for.

    Attributes:
        tenant: The tenant of the key.
        key_id: The API key's id (text), or ``None`` (operator, CLI).
        request_id: The request's id, or ``None`` outside a request.
        paid_quota: The key's daily paid-call quota, or ``None`` for no quota.
    """

    tenant: str
    key_id: str | None = None
    request_id: str | None = None
    paid_quota: int | None = None


current_tenant: ContextVar[str | None] = ContextVar("current_tenant", default=None)
"""The tenant of the API key that authenticated the current request, or ``None``."""

current_caller: ContextVar[Caller | None] = ContextVar("current_caller", default=None)
"""Who the current request (or job) acts for, or ``None`` (CLI, tests)."""


@contextmanager
def tenant_scope(tenant: str | None) -> Iterator[None]:
    """Set :data:`current_tenant` for the ``with`` block and restore the previous value after.

    Args:
        tenant: The tenant to act for (``None`` clears it).

    Yields:
        Nothing; the tenant is read through :data:`current_tenant`.
    """
    token = current_tenant.set(tenant)
    try:
        yield
    finally:
        current_tenant.reset(token)


@contextmanager
def caller_scope(caller: Caller) -> Iterator[None]:
    """Set :data:`current_caller` and :data:`current_tenant` for the ``with`` block.

    Args:
        caller: Who the block acts for.

    Yields:
        Nothing; read the caller through :data:`current_caller`.
    """
    token = current_caller.set(caller)
    tenant_token = current_tenant.set(caller.tenant)
    try:
        yield
    finally:
        current_tenant.reset(tenant_token)
        current_caller.reset(token)
