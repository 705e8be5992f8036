"""SQL tables (SQLAlchemy Core). The Alembic migrations in migrations/ create exactly these."""
from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB

from app.store.records import COUNTER_FIELDS

metadata = MetaData()

# JSONB on PostgreSQL, JSON text elsewhere.
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
Id = String(36)
AutoId = BigInteger().with_variant(Integer, "sqlite")

batches = Table(
    "batches",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("type", String(16), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("status", String(32), nullable=False),
    Column("context", Json, nullable=False),
    Column("failure_policy", String(32), nullable=False),
    Column("max_concurrency", Integer),
    Column("callbacks", Json, nullable=False),
    Column("error", Json),
    *[Column(name, Integer, nullable=False) for name in COUNTER_FIELDS],
    Column("next_position", Integer, nullable=False),
    Column("traceparent", String(64)),
    Column("lease_key", String(32), nullable=False),
    Column("adds", Json),
    Column("version", BigInteger, nullable=False),
    # The rest of a whole-batch move that goes a chunk of positions per transaction (sql_journal).
    Column("pend", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Index("ix_batches_tenant_created", "tenant", "created_at"),
    Index("ix_batches_tenant_status_created", "tenant", "status", "created_at"),
    Index("ix_batches_created", "created_at"),
    Index("ix_batches_finished", "finished_at"),
    # The few batches with moves left to do (the reconciler finishes those a process that died left).
    Index("ix_batches_pend", "id", postgresql_where=text("pend IS NOT NULL"), sqlite_where=text("pend IS NOT NULL")),
)

jobs = Table(
    "jobs",
    metadata,
    Column("batch_id", Id, primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("args", Json, nullable=False),
    Column("compensation", Json),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("attempt_base", Integer, nullable=False),
    Column("available_at", Float),
    Column("lease", String(64)),
    Column("lease_expires_at", Float),
    Column("started_at", Float),
    Column("worker", String(200)),
    Column("error", Text),
    Column("result", Json),
    Column("context_in", Json),
    Column("original_position", Integer),
    Column("compensation_info", Json),
    Column("created_at", Float, nullable=False),
    Column("queued_at", Float),
    Column("finished_at", Float),
    Index("ix_jobs_batch_kind_status", "batch_id", "kind", "status", "position"),
    # The lease reaper's and the reconciler's work: small partial indexes.
    Index(
        "ix_jobs_running_lease", "lease_expires_at",
        postgresql_where=text("status = 'running'"), sqlite_where=text("status = 'running'"),
    ),
    Index(
        "ix_jobs_queued", "available_at",
        postgresql_where=text("status = 'queued'"), sqlite_where=text("status = 'queued'"),
    ),
)  # fmt: skip

attempts = Table(
    "attempts",
    metadata,
    Column("batch_id", Id, primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("attempt", Integer, primary_key=True, autoincrement=False),
    Column("status", String(16), nullable=False),
    Column("worker", String(200)),
    Column("error", Text),
    Column("queued_at", Float),
    Column("started_at", Float),
    Column("finished_at", Float),
)

# The outbox. With the SQL queue it is also the queue workers claim from; with Redis
# Streams a relay moves due rows to the streams and deletes them. A row is an attempt's
# address only: the message is built from the job when the attempt starts.
messages = Table(
    "messages",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("batch_id", Id, nullable=False),
    Column("position", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("available_at", Float, nullable=False),
    Column("deliveries", Integer, nullable=False, server_default="0"),
    Index("ix_messages_queue_available", "tenant", "queue", "available_at", "id"),
    Index("ix_messages_available", "available_at"),
    Index("ix_messages_job", "batch_id", "position"),
)

events = Table(
    "events",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("batch_id", Id, nullable=False),
    Column("type", String(32), nullable=False),
    Column("data", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_events_batch_id", "batch_id", "id"),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Id, primary_key=True),
    Column("batch_id", Id, nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("url", Text, nullable=False),
    Column("headers", Json, nullable=False),
    Column("body", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text),
    Column("deliveries", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float),
    Index("ix_webhooks_status_next", "status", "next_attempt_at"),
    Index("ix_webhooks_batch", "batch_id", "created_at"),
)

# Idempotency-Key records: the first response to a key, replayed to its repeats.
idempotency = Table(
    "idempotency",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("batch_id", Id, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", Text, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_idempotency_expires", "expires_at"),
)

# Values made once per installation (app.store.capabilities.Installation): the generated
# webhook secret.
installation = Table(
    "installation",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
