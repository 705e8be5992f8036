"""Every Redis key of batchq, named in one place (P = settings.redis_prefix).

The layout is the same on one Redis node and on a Redis Cluster. On a cluster, a key's hash
slot (and so its master) comes from its `{hash tag}` or, without one, from the whole key.
The rule that makes the store run on a cluster unchanged: **no command and no script names
keys of two slots.** Every script declares all its keys in KEYS (none is built inside Lua).

Per batch (B), all tagged `{B}`, so one slot holds the whole batch and the commit script
changes it atomically (every operation touches one batch):
  P:{B}:batch        hash: the counts (`jobs_waiting` …, one field each, so a FAST commit
                     moves them with HINCRBY), `d` (the other batch fields, JSON), `st` and
                     `er` (status, and "1" while it holds a failure: the FAST guard reads
                     them without decoding `d`), `tn` (tenant), `ut` (updated_at), `v`
                     (version), `seq` (last event id), `whp` (webhooks still pending), `lk` /
                     `lkx` (the LOCKED operation's token and its expiry, ms)
  P:{B}:jobs         hash position -> a job's fixed fields (JSON, written once)
  P:{B}:state        hash position -> its changing fields (redis_codec.JobState: a string
                     that Lua edits without decoding JSON, so numbers stay exactly as sent)
  P:{B}:error        hash position -> its last error (string)
  P:{B}:result       hash position -> its result (JSON)
  P:{B}:ctx          hash position -> the context a chain step ran with (JSON)
  P:{B}:att          hash "position.attempt" -> an ended attempt (JSON)
  P:{B}:ev           zset of "id\\n{event JSON}" scored by id (per-batch ids from `seq`)
  P:{B}:wh, :whl     hash id -> webhook JSON; list of ids in order
  P:{B}:lease        zset position -> lease_expires_at of its running jobs
  P:{B}:out          zset "position\\x1fattempt\\x1fqueue" -> available_at: its outbox
  P:{B}:z:{K}:{S}    zsets of positions (score = position) by kind K (job, compensation,
                     callback, all) and status S (or "all")
A finished batch's keys expire after settings.finished_ttl_s; a retried one persists again.

Shared by all batches: each is one key (one slot) written by single-key commands, in a
separate step *after* the batch's commit (never inside it), idempotent, and repaired by
the reconciler from the batches themselves when a crash or a failover lost such a write;
`active` is the reconciler's own list, written before a new batch commits:
  P:active           zset batch id -> when last announced: batches the reconciler still looks
                     at (until finished, with no outbox, lease or pending webhook left)
  P:list:{T}, P:list:{T}:s:{S}, P:list:{T}:q:{Q}
                     zsets batch id -> created_at: listings of tenant T ("*": all tenants)
  P:out              zset batch id -> earliest due outbox message (the relay's work)
  P:leases           zset batch id -> earliest lease expiry (the reaper's work)
  P:hooks            zset "batch id\\nwebhook id" -> next delivery attempt (the sender's work)
  P:qc               hash "tenant\\x1fqueue\\x1fstatus" -> queued / running jobs (gauges; a
                     crash or failover between a commit and its increment leaves them off)
  P:idem:{T}:{key}   an Idempotency-Key record (JSON, with a TTL): read and written alone
  P:installation:{N} a value made once for the installation (the generated webhook secret;
                     no TTL): read and written alone
These keys are hot on a cluster (every batch's commit touches some of them, on their
masters), but each is one small command per commit, pipelined.

The broker's keys (app.broker.redis_streams; the store never names them):
  P:stream:{T}:{Q}   the stream of queue Q of tenant T, consumer group "workers";
  P:stream:{T}:{Q}#N partition N (1 …) of a queue spread over several streams: no tag, so
                     the partitions of one queue hash to different slots (and masters)
  P:queues           set of "tenant/queue": every queue that has had a message

With BATCHQ_REDIS_WAIT_REPLICAS ≥ 1 the writes nothing could rebuild — a batch's commit,
`active`, the Idempotency-Key records, the installation values — are answered only once
replicas have them (app.store.redis_replicas); the rest is rebuilt or republished by the
reconciler.
"""
from __future__ import annotations

from app.domain.states import JobKind, JobStatus

SEP = "\x1f"
ALL = "all"
KINDS = [k.value for k in JobKind] + [ALL]
STATUSES = [s.value for s in JobStatus] + [ALL]
# The per-batch keys, in the order every script declares them (KEYS[1] .. KEYS[n]).
FIXED = ["batch", "jobs", "state", "error", "result", "ctx", "att", "ev", "wh", "whl", "lease", "out"]
ZSETS = [f"z:{kind}:{status}" for kind in KINDS for status in STATUSES]
BATCH_KEYS = FIXED + ZSETS
INDEX = {name: i + 1 for i, name in enumerate(BATCH_KEYS)}  # Lua's KEYS are 1-based


def zset_index(kind: str, status: str | None) -> int:
    return INDEX[f"z:{kind}:{status or ALL}"]


class Keys:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.active = f"{prefix}:active"
        self.outbox_index = f"{prefix}:out"
        self.lease_index = f"{prefix}:leases"
        self.hooks_index = f"{prefix}:hooks"
        self.queue_counts = f"{prefix}:qc"

    def of(self, batch_id: str, name: str) -> str:
        return f"{self.prefix}:{{{batch_id}}}:{name}"

    def batch_keys(self, batch_id: str) -> list[str]:
        return [self.of(batch_id, name) for name in BATCH_KEYS]

    def listing(self, tenant: str | None, status: str | None = None, queue: str | None = None) -> str:
        base = f"{self.prefix}:list:{tenant if tenant is not None else '*'}"
        if status:
            return f"{base}:s:{status}"
        if queue:
            return f"{base}:q:{queue}"
        return base

    def listings(self, tenant: str, status: str, queue: str) -> list[str]:
        """Every listing a batch belongs to (its tenant's and the all-tenant ones)."""
        return [self.listing(t, s, q) for t in (tenant, None) for s, q in ((None, None), (status, None), (None, queue))]

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idem:{tenant}:{key}"

    def installation(self, name: str) -> str:
        return f"{self.prefix}:installation:{name}"


def stream_key(prefix: str, tenant: str, queue: str, partition: int = 0) -> str:
    """The broker's stream of a queue, or of its partition N ≥ 1."""
    base = f"{prefix}:stream:{tenant}:{queue}"
    return base if partition == 0 else f"{base}#{partition}"


def queues_key(prefix: str) -> str:
    """The broker's set of "tenant/queue": every queue that has had a message."""
    return f"{prefix}:queues"
