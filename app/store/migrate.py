"""Run the Alembic migrations (migrations/) on an async engine (used by `batchq migrate`
and, for the embedded default, on start-up)."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# migrations/ at the top of a source checkout; an installed batchq carries it as app/migrations.
_APP = Path(__file__).resolve().parents[1]
MIGRATIONS = next(p for p in (_APP / "migrations", _APP.parent / "migrations") if (p / "env.py").exists())


def alembic_config(connection=None) -> Config:  # noqa: ANN001
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    # sqlite_immediate: SQLite takes the write lock first (see app.store.sql.make_engine).
    async with engine.execution_options(sqlite_immediate=True).begin() as conn:
        if conn.dialect.name == "postgresql":
            # Several API replicas may start at once: one migrates, the others wait.
            await conn.execute(text("SELECT pg_advisory_xact_lock(824061)"))
        await conn.run_sync(lambda sync_conn: command.upgrade(alembic_config(sync_conn), revision))
