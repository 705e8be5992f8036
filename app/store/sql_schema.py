"""SQL tables (SQLAlchemy Core). Alembic migrations in app/migrations/ create exactly these."""
from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# JSONB on PostgreSQL, JSON text elsewhere.
Json = JSON(none_as_null=False).with_variant(JSONB(none_as_null=False), "postgresql")
Id = String(36)

batches = Table(
    "batches",
    metadata,
    Column("id", Id, primary_key=True),
    Column("type", String(16), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("status", String(32), nullable=False),
    Column("context", Json, nullable=False),
    Column("failure_policy", String(32), nullable=False),
    Column("max_concurrency", Integer),
    Column("callbacks", Json, nullable=False),
    Column("total", Integer, nullable=False),
    Column("completed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("cancelled", Integer, nullable=False),
    Column("waiting", Integer, nullable=False),
    Column("in_flight", Integer, nullable=False),
    Column("comp_open", Integer, nullable=False),
    Column("comp_completed", Integer, nullable=False),
    Column("comp_failed", Integer, nullable=False),
    Column("next_position", Integer, nullable=False),
    Column("finish_seq", Integer, nullable=False),
    Column("progress_step", Integer, nullable=False),
    Column("error", Json),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Index("ix_batches_status_created", "status", "created_at"),
    Index("ix_batches_queue_created", "queue", "created_at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True),
    Column("batch_id", Id, nullable=False),
    Column("position", Integer, nullable=False),
    Column("name", String(200), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("args", Json, nullable=False),
    Column("compensation", Json),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("attempt_base", Integer, nullable=False),
    Column("error", Text),
    Column("result", Json),
    Column("context_in", Json),
    Column("original_job_id", Id),
    Column("compensation_info", Json),
    Column("finish_seq", Integer),
    Column("cancel_reason", String(32)),
    Column("created_at", Float, nullable=False),
    Column("queued_at", Float),
    Column("started_at", Float),
    Column("finished_at", Float),
    Index("ix_jobs_batch_kind_status_pos", "batch_id", "kind", "status", "position"),
    Index("ix_jobs_batch_pos", "batch_id", "position"),
    Index("ix_jobs_status_queue", "status", "queue"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("job_id", Id, primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("batch_id", Id, nullable=False),
    Column("status", String(16), nullable=False),
    Column("lease", String(64)),
    Column("lease_expires_at", Float),
    Column("queued_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("error", Text),
    Column("worker", String(200)),
    Index("ix_attempts_status_lease", "status", "lease_expires_at"),
)

# The outbox. With the SQL broker it is also the queue workers claim from; with Redis
# Streams a relay moves due rows to the streams and deletes them.
messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("queue", String(100), nullable=False),
    Column("job_id", Id, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("payload", Json, nullable=False),
    Column("available_at", Float, nullable=False),
    Column("deliveries", Integer, nullable=False, server_default="0"),
    Index("ix_messages_queue_available", "queue", "available_at", "id"),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
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
