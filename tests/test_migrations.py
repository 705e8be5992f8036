"""The Alembic migrations create exactly the schema the code uses."""
from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.store.sql import SqlStore
from app.store.sql_schema import metadata
from conftest import PG_URL


@pytest.mark.parametrize("which", ["sqlite", "postgresql"])
async def test_migrations_match_the_models(which, tmp_path, pg_ready):
    if which == "postgresql":
        url = PG_URL
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/m.db"
    store = SqlStore(url)
    try:
        await store.init()  # runs the migrations (idempotently on an existing database)
        async with store.engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
        assert diff == []
    finally:
        await store.close()
