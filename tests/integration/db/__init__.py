"""Integration tests of the PostgreSQL adapters (infra/db)."""
