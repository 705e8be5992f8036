"""Reshaped schema: jobs keyed by (batch, position) and holding their live attempt, counts
per status, thin outbox rows, tenants, idempotency records.

0.1's tables are dropped and made anew: finish or drain running batches before upgrading.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# JSONB on PostgreSQL, JSON text elsewhere (kept literal here: migrations never import app code).
JSON_ = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
COUNTERS = [f"{group}_{status}" for group in ("jobs", "comps")
            for status in ("waiting", "queued", "running", "completed", "failed", "cancelled")]  # fmt: skip


def upgrade() -> None:
    for table in ("attempts", "messages", "events", "webhooks", "jobs", "batches"):
        op.drop_table(table)
    op.create_table(
        "batches",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("context", JSON_, nullable=False),
        sa.Column("failure_policy", sa.String(32), nullable=False),
        sa.Column("max_concurrency", sa.Integer()),
        sa.Column("callbacks", JSON_, nullable=False),
        sa.Column("error", JSON_),
        *[sa.Column(name, sa.Integer(), nullable=False) for name in COUNTERS],
        sa.Column("next_position", sa.Integer(), nullable=False),
        sa.Column("traceparent", sa.String(64)),
        sa.Column("adds", JSON_),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float()),
    )
    op.create_index("ix_batches_tenant_created", "batches", ["tenant", "created_at"])
    op.create_index("ix_batches_tenant_status_created", "batches", ["tenant", "status", "created_at"])
    op.create_index("ix_batches_created", "batches", ["created_at"])
    op.create_index("ix_batches_finished", "batches", ["finished_at"])
    op.create_table(
        "jobs",
        sa.Column("batch_id", sa.String(36), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("args", JSON_, nullable=False),
        sa.Column("compensation", JSON_),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempt_base", sa.Integer(), nullable=False),
        sa.Column("available_at", sa.Float()),
        sa.Column("lease", sa.String(64)),
        sa.Column("lease_expires_at", sa.Float()),
        sa.Column("started_at", sa.Float()),
        sa.Column("worker", sa.String(200)),
        sa.Column("error", sa.Text()),
        sa.Column("result", JSON_),
        sa.Column("context_in", JSON_),
        sa.Column("original_position", sa.Integer()),
        sa.Column("compensation_info", JSON_),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("queued_at", sa.Float()),
        sa.Column("finished_at", sa.Float()),
    )
    op.create_index("ix_jobs_batch_kind_status", "jobs", ["batch_id", "kind", "status", "position"])
    running, queued = sa.text("status = 'running'"), sa.text("status = 'queued'")
    op.create_index("ix_jobs_running_lease", "jobs", ["lease_expires_at"], postgresql_where=running, sqlite_where=running)
    op.create_index("ix_jobs_queued", "jobs", ["queue", "available_at"], postgresql_where=queued, sqlite_where=queued)
    op.create_table(
        "attempts",
        sa.Column("batch_id", sa.String(36), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("attempt", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(200)),
        sa.Column("error", sa.Text()),
        sa.Column("queued_at", sa.Float()),
        sa.Column("started_at", sa.Float()),
        sa.Column("finished_at", sa.Float()),
    )
    op.create_table(
        "messages",
        sa.Column("id", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("available_at", sa.Float(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_messages_queue_available", "messages", ["tenant", "queue", "available_at", "id"])
    op.create_index("ix_messages_available", "messages", ["available_at"])
    op.create_index("ix_messages_job", "messages", ["batch_id", "position"])
    op.create_table(
        "events",
        sa.Column("id", AUTO_ID, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("data", JSON_, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_events_batch_id", "events", ["batch_id", "id"])
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("headers", JSON_, nullable=False),
        sa.Column("body", JSON_, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("deliveries", JSON_, nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("delivered_at", sa.Float()),
    )
    op.create_index("ix_webhooks_status_next", "webhooks", ["status", "next_attempt_at"])
    op.create_index("ix_webhooks_batch", "webhooks", ["batch_id", "created_at"])
    op.create_table(
        "idempotency",
        sa.Column("tenant", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_idempotency_expires", "idempotency", ["expires_at"])


def downgrade() -> None:
    raise NotImplementedError("0.1's schema is not restored; recreate the database instead")
