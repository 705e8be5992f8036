"""The SQL store's installation values (app.store.capabilities.Installation): one row each."""
from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.store import sql_schema as t
from app.store.capabilities import Installation


class SqlInstallation(Installation):
    def __init__(self, engine: AsyncEngine, write_engine: AsyncEngine):
        self.engine = engine
        self.write_engine = write_engine

    async def _read(self, name: str) -> str | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(t.installation.c.value).where(t.installation.c.name == name))).scalar()

    async def installation_value(self, name: str, make: Callable[[], str]) -> str:
        value = await self._read(name)
        if value is not None:
            return value
        try:
            async with self.write_engine.begin() as conn:
                await conn.execute(t.installation.insert().values(name=name, value=make(), created_at=time.time()))
        except IntegrityError:
            pass  # another replica stored one first: its value is the installation's
        value = await self._read(name)
        assert value is not None
        return value
