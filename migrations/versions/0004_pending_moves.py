"""Whole-batch moves (cancel, retry, fail-fast) go a chunk of positions per transaction: the
rest waits in the batch's journal (app/store/sql_journal.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("pend", sa.Text(), nullable=True))
    op.create_index(
        "ix_batches_pend", "batches", ["id"],
        postgresql_where=sa.text("pend IS NOT NULL"), sqlite_where=sa.text("pend IS NOT NULL"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_batches_pend", table_name="batches")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("pend")
