"""Fixtures for tests that drive the real app factory in-process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from litestar.testing import AsyncTestClient

from app.main import create_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Litestar

    from app.config import Settings


@pytest.fixture(scope="session")
def app(settings: Settings) -> Litestar:
    """The application, built once for the session."""
    return create_app(settings)


@pytest.fixture(scope="session")
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """A client whose lifespan (pool, Redis) runs once per session."""
    async with AsyncTestClient(app=app) as client:
        yield client
