"""Alembic environment: migrations run on a connection handed over by app.store.migrate."""
from __future__ import annotations

from alembic import context

from app.store.sql_schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `batchq migrate` (app.store.migrate.upgrade)")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
