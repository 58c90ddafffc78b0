"""The tenant a request acts for, visible to every layer below the HTTP edge.

The auth middleware sets :data:`current_tenant` from the verified API key for the duration of
one request; storage adapters read it to scope every query (OWASP API1, broken object level
authorization: a party stored for tenant A must never be readable with a key of tenant B).

A :class:`contextvars.ContextVar` rather than a parameter threaded through every use case: the
value is set once at the edge and read once at the adapter, and asyncio copies the context into
tasks created during the request, so work fanned out by a handler (``asyncio.gather``) keeps the
tenant too. Outside a request (CLI, worker, tests) it is ``None`` unless code sets it.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["current_tenant", "tenant_scope"]

current_tenant: ContextVar[str | None] = ContextVar("current_tenant", default=None)
"""The tenant of the API key that authenticated the current request, or ``None``."""


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
