"""History that survives restarts: every fetched row is kept in DuckDB (embedded) or PostgreSQL/TimescaleDB.

``open_store(settings)`` gives the store ``RTDASH_STORE`` names; a :class:`StoreWriter` takes rows from the pollers
and writes them in batches on its own thread, buffering them while the store is unreachable.
"""

from __future__ import annotations

from ..config import Settings
from .base import KINDS, METRICS, Store, StoreError
from .writer import StoreStatus, StoreWriter, attach

NONE = ("", "none", "off")


def open_store(settings: Settings) -> Store | None:
    """The store of ``settings.store``: a file path (DuckDB), a ``postgresql://`` URL, or ``none`` (no history).

    Raises :class:`StoreError` with a one-line reason when it cannot be opened.  A PostgreSQL store connects on
    first use, so a server that is down at start does not stop the dashboard.
    """
    target = (settings.store or "").strip()
    if target.lower() in NONE:
        return None
    if target.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(target)
    if "://" in target:
        scheme = target.split("://", 1)[0]
        raise StoreError(
            f"RTDASH_STORE with {scheme}:// is not supported: expected a file path, a postgresql:// URL or none"
        )
    from .duckdb import DuckDBStore

    return DuckDBStore(target)


__all__ = ["KINDS", "METRICS", "Store", "StoreError", "StoreStatus", "StoreWriter", "attach", "open_store"]
