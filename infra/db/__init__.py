"""PostgreSQL adapters: migrations (dbmate), the party repository, the pool factory, the seed.

Submodules are imported explicitly (``from infra.db.repository import PgPartyRepository``) so
importing this package stays free of side effects and of the heavier dependencies.
"""

from __future__ import annotations

__all__ = ["migrate", "pool", "repository", "seed", "sql"]
