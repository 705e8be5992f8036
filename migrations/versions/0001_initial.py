"""Initial schema: batches, jobs, attempts, messages (outbox / SQL queue), events, webhooks.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# JSONB on PostgreSQL, JSON text elsewhere (kept literal here: migrations never import app code).
JSON_ = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table('attempts',
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('lease', sa.String(length=64), nullable=True),
    sa.Column('lease_expires_at', sa.Float(), nullable=True),
    sa.Column('queued_at', sa.Float(), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('job_id', 'attempt')
    )
    op.create_index('ix_attempts_status_lease', 'attempts', ['status', 'lease_expires_at'], unique=False)
    op.create_table('batches',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('queue', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('context', JSON_, nullable=False),
    sa.Column('failure_policy', sa.String(length=32), nullable=False),
    sa.Column('max_concurrency', sa.Integer(), nullable=True),
    sa.Column('callbacks', JSON_, nullable=False),
    sa.Column('total', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('cancelled', sa.Integer(), nullable=False),
    sa.Column('waiting', sa.Integer(), nullable=False),
    sa.Column('in_flight', sa.Integer(), nullable=False),
    sa.Column('comp_open', sa.Integer(), nullable=False),
    sa.Column('comp_completed', sa.Integer(), nullable=False),
    sa.Column('comp_failed', sa.Integer(), nullable=False),
    sa.Column('next_position', sa.Integer(), nullable=False),
    sa.Column('finish_seq', sa.Integer(), nullable=False),
    sa.Column('progress_step', sa.Integer(), nullable=False),
    sa.Column('error', JSON_, nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_batches_queue_created', 'batches', ['queue', 'created_at'], unique=False)
    op.create_index('ix_batches_status_created', 'batches', ['status', 'created_at'], unique=False)
    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('batch_id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('data', JSON_, nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_events_batch_id', 'events', ['batch_id', 'id'], unique=False)
    op.create_table('jobs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('batch_id', sa.String(length=36), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('queue', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('args', JSON_, nullable=False),
    sa.Column('compensation', JSON_, nullable=True),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('timeout_s', sa.Float(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('attempt_base', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('result', JSON_, nullable=True),
    sa.Column('context_in', JSON_, nullable=True),
    sa.Column('original_job_id', sa.String(length=36), nullable=True),
    sa.Column('compensation_info', JSON_, nullable=True),
    sa.Column('finish_seq', sa.Integer(), nullable=True),
    sa.Column('cancel_reason', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('queued_at', sa.Float(), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_jobs_batch_kind_status_pos', 'jobs', ['batch_id', 'kind', 'status', 'position'], unique=False)
    op.create_index('ix_jobs_batch_pos', 'jobs', ['batch_id', 'position'], unique=False)
    op.create_index('ix_jobs_status_queue', 'jobs', ['status', 'queue'], unique=False)
    op.create_table('messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('queue', sa.String(length=100), nullable=False),
    sa.Column('job_id', sa.String(length=36), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('payload', JSON_, nullable=False),
    sa.Column('available_at', sa.Float(), nullable=False),
    sa.Column('deliveries', sa.Integer(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_messages_queue_available', 'messages', ['queue', 'available_at', 'id'], unique=False)
    op.create_table('webhooks',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('batch_id', sa.String(length=36), nullable=False),
    sa.Column('event_type', sa.String(length=32), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('headers', JSON_, nullable=False),
    sa.Column('body', JSON_, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.Float(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('deliveries', JSON_, nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.Column('delivered_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_webhooks_batch', 'webhooks', ['batch_id', 'created_at'], unique=False)
    op.create_index('ix_webhooks_status_next', 'webhooks', ['status', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhooks_status_next', table_name='webhooks')
    op.drop_index('ix_webhooks_batch', table_name='webhooks')
    op.drop_table('webhooks')
    op.drop_index('ix_messages_queue_available', table_name='messages')
    op.drop_table('messages')
    op.drop_index('ix_jobs_status_queue', table_name='jobs')
    op.drop_index('ix_jobs_batch_pos', table_name='jobs')
    op.drop_index('ix_jobs_batch_kind_status_pos', table_name='jobs')
    op.drop_table('jobs')
    op.drop_index('ix_events_batch_id', table_name='events')
    op.drop_table('events')
    op.drop_index('ix_batches_status_created', table_name='batches')
    op.drop_index('ix_batches_queue_created', table_name='batches')
    op.drop_table('batches')
    op.drop_index('ix_attempts_status_lease', table_name='attempts')
    op.drop_table('attempts')
