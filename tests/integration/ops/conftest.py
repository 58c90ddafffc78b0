"""Fixtures of the operations tests (backups, flags, versioning)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
import pytest

if TYPE_CHECKING:
    from app.config import Settings


@pytest.fixture
def ops_settings(settings: Settings, redis_prefix: str, request: pytest.FixtureRequest) -> Settings:
    """The session settings with a Redis prefix of this test's own (still under the session's,
    so the session cleanup removes it): flag overrides set here never leak into other tests."""
    name = request.node.name.replace("[", ":").replace("]", "")
    return msgspec.structs.replace(settings, redis_key_prefix=f"{redis_prefix}ops:{name}:")
