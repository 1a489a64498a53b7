"""The PostgreSQL session store (see :mod:`app.store.postgres.store` for its parts)."""

from app.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
