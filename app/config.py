"""All settings in one place, read from BATCHQ_* environment variables."""
from __future__ import annotations

import hashlib
from functools import lru_cache
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from batchq.webhooks import secret_key

from app.redis_client import is_redis_url


MAX_PARTITIONS = 64


class QueueConfig(BaseModel):
    """Per-queue defaults; a job's own values win."""

    visibility_timeout_s: float | None = None
    max_attempts: int | None = None
    # Redis Streams: spread the queue over this many streams (BATCHQ_QUEUE_PARTITIONS otherwise).
    partitions: int | None = Field(default=None, ge=1, le=MAX_PARTITIONS)


Scope = Literal["produce", "read", "work", "admin"]


class ApiKey(BaseModel):
    """One API key (BATCHQ_API_KEYS is a JSON list of these). Give `key`, or `key_sha256` (its
    SHA-256, hex) so that the key itself need not sit in the environment."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(default=None, min_length=16)
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    tenant: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    scopes: list[Scope] = Field(min_length=1)
    queues: list[str] | None = None  # `work` keys: only these queues (None: every queue of the tenant)
    name: str | None = None  # who holds it, for logs

    @model_validator(mode="after")
    def one_form(self) -> ApiKey:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give `key` or `key_sha256`, not both")
        return self

    @property
    def digest(self) -> str:
        if self.key_sha256 is not None:
            return self.key_sha256.lower()
        return hashlib.sha256(self.key.encode()).hexdigest()  # type: ignore[union-attr]


MIN_SECRET_BYTES = 24  # the Standard Webhooks specification: 24 to 64 random bytes


def check_webhook_secret(secret: str) -> None:
    """Refuse secrets the Standard Webhooks libraries cannot use, or that are easy to guess."""
    if not secret.startswith("whsec_"):
        raise ValueError("a webhook secret is `whsec_` followed by base64, e.g. the output of "
                         "python -c 'import base64,os; print(\"whsec_\" + base64.b64encode(os.urandom(32)).decode())'")
    try:
        key = secret_key(secret)
    except ValueError:
        raise ValueError("a webhook secret is `whsec_` followed by base64; this one is not valid base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret holds at least {MIN_SECRET_BYTES} random bytes; this one holds {len(key)}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHQ_", extra="ignore")

    # Where batches live: sqlite+aiosqlite:///…, postgresql+asyncpg://…, or redis://…
    database_url: str = "sqlite+aiosqlite:///./batchq.db"
    # What carries job messages: "sql" (a queue table in the SQL store) or redis://…
    broker_url: str = "sql"
    # SQL connections per API process (PostgreSQL): kept open, and extra under load.
    db_pool_size: int = 10
    db_max_overflow: int = 20
    # Redis connections of the store per API process: more concurrent operations than this
    # wait for a free one (a burst is queued, not refused), up to redis_pool_timeout_s. On a
    # Redis Cluster: per node, and redis-py's cluster client refuses the excess (503).
    redis_max_connections: int = Field(default=100, ge=1)
    redis_pool_timeout_s: float = Field(default=10.0, gt=0)
    # How many jobs one transaction (SQL) or script (Redis) of a whole-batch operation (cancel,
    # retry, fail-fast; on Redis a big add too) may edit; the rest follows in further ones,
    # journaled in the batch, so the database (and every other batch) is never held for more
    # than a moment. 0: all at once. Unset: 5,000 on SQLite (one writer) and the Redis store
    # (one script at a time); all at once on PostgreSQL, where such an operation locks only
    # its own batch (in chunks it took longer and spared no one).
    move_budget: int | None = Field(default=None, ge=0)
    # Redis keys (store and streams) live under this prefix (no braces: a Redis Cluster
    # would read them as a hash tag and put every key in one slot).
    redis_prefix: str = Field(default="batchq", pattern=r"^[^{}]+$")
    # The redis:// URLs name a Redis Cluster (or write redis+cluster://h1:p1,h2:p2).
    redis_cluster: bool = False
    # Answer a commit only once this many replicas have it (WAIT; 0: don't wait). See
    # app/store/redis_replicas.py and "Redis Cluster" in the README.
    redis_wait_replicas: int = Field(default=0, ge=0, le=16)
    redis_wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000)
    # Redis Streams: every queue is spread over this many streams (per queue: BATCHQ_QUEUES).
    queue_partitions: int = Field(default=1, ge=1, le=MAX_PARTITIONS)

    # API keys with scopes and tenants (JSON list of ApiKey). With none (and no api_token),
    # the API is open: every caller is an admin of the tenant "default".
    api_keys: list[ApiKey] = Field(default_factory=list)
    # One key with every scope (the tenant "default"), kept from 0.1.
    api_token: str | None = None
    # /openapi.json, /docs and /redoc: open to anyone (true), or to holders of a key (false).
    public_docs: bool = True
    # Bodies larger than this are refused (413) before they are read.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    host: str = "127.0.0.1"
    port: int = 8000

    # Delivery
    default_visibility_timeout_s: float = 60.0  # lease length of a running attempt
    default_max_attempts: int = 1
    retry_backoff_base_s: float = 1.0  # delay before attempt n+1 = base * 2**(n-1), capped
    retry_backoff_max_s: float = 300.0
    # A message fetched from the broker but never turned into a running attempt
    # (the fetching process died) becomes visible again after this long.
    claim_timeout_s: float = 30.0

    # How long an Idempotency-Key is remembered (create, add jobs).
    idempotency_ttl_s: float = Field(default=86400.0, ge=60)

    # Jobs one batch may hold over its life (one request adds at most 100,000).
    max_batch_jobs: int = Field(default=1_000_000, ge=1)

    # Named queues: JSON object {"name": {"visibility_timeout_s": .., "max_attempts": ..}}
    queues: dict[str, QueueConfig] = Field(default_factory=dict)
    allow_undeclared_queues: bool = True

    # Background loops run inside every API process; all are safe to run on N replicas.
    background: bool = True
    poll_interval_s: float = 0.2
    # The reconciler (app/dispatch/reconciler.py): how often it looks, and how late a queued
    # job's message may be (behind the relay's lag) before it counts as lost.
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    reconcile_grace_s: float = Field(default=30.0, ge=0)
    # A live event stream ends after this long; the client resumes with Last-Event-ID.
    sse_max_s: float = Field(default=300.0, gt=0)
    # How often a process asks for the news of the batches its event streams follow (the
    # commits of other processes; its own wake the streams at once).
    sse_check_s: float = Field(default=1.0, gt=0)
    reaper_interval_s: float = 1.0

    # Webhooks, signed the Standard Webhooks way with each secret (`whsec_<base64>`, 24+ bytes):
    # webhook_secret, then webhook_secrets (rotation: several at once). With none, the store
    # keeps a secret generated once for the installation (GET /v1/webhook-secret, admin).
    webhook_secret: str | None = None
    webhook_secrets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Callbacks may reach public addresses only; true lifts that (local development, tests).
    allow_private_callbacks: bool = False
    webhook_timeout_s: float = 5.0
    webhook_max_attempts: int = 8
    webhook_backoff_base_s: float = 1.0
    webhook_backoff_max_s: float = 600.0

    # Redis store: finished batches expire after this many seconds.
    finished_ttl_s: int = 86400
    # SQL store: delete finished batches (with their jobs, attempts, events and webhooks)
    # this many seconds after they ended. Unset: keep them for ever.
    sql_retention_s: float | None = None

    # Telemetry (README: Telemetry). Server log lines: "text" (for a terminal) or "json"
    # (one object a line, with batch_id, job_id, attempt, tenant, request_id where they apply).
    log_format: Literal["text", "json"] = "text"
    # OpenTelemetry spans and trace context, when the `otel` extra is installed (false: none).
    tracing: bool = True
    # Undeclared queues named in metric labels (one process); later ones are counted as `_other`.
    metrics_max_queues: int = Field(default=50, ge=0)

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def secret_list(cls, value: object) -> object:
        """A JSON list, or secrets separated by spaces or commas."""
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else text.replace(",", " ").split()
        return value

    @field_validator("webhook_secret", "webhook_secrets")
    @classmethod
    def standard_secrets(cls, value: str | list[str] | None) -> str | list[str] | None:
        for secret in [value] if isinstance(value, str) else value or []:
            check_webhook_secret(secret)
        return value

    @property
    def signing_secrets(self) -> list[str]:
        """The configured webhook secrets, each once, in order (none: use the generated one)."""
        given = ([self.webhook_secret] if self.webhook_secret else []) + self.webhook_secrets
        return list(dict.fromkeys(given))

    def moves_per_step(self) -> int:
        """The move budget in force (see move_budget)."""
        if self.move_budget is not None:
            return self.move_budget
        return 0 if self.database_url.startswith("postgresql") else 5000

    def queue_config(self, name: str) -> QueueConfig | None:
        return self.queues.get(name)

    def partitions(self, queue: str) -> int:
        own = self.queues.get(queue)
        return own.partitions if own is not None and own.partitions is not None else self.queue_partitions

    @property
    def store_kind(self) -> str:
        return "redis" if is_redis_url(self.database_url) else "sql"

    @property
    def broker_kind(self) -> str:
        return "redis" if is_redis_url(self.broker_url) else "sql"


@lru_cache
def get_settings() -> Settings:
    return Settings()
