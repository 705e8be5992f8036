"""Initial schema: batches, jobs, attempts, messages (outbox / SQL queue), events, webhooks.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""
from alembic import op

from app.store import sql_schema as t

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = [t.batches, t.jobs, t.attempts, t.messages, t.events, t.webhooks]


def upgrade() -> None:
    bind = op.get_bind()
    for table in TABLES:
        table.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(TABLES):
        table.drop(bind)
