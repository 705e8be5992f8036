"""Every Redis key of the Redis store, named in one place (P = settings.redis_prefix).

One batch's keys share the hash tag `{batch id}`, so they sit in one hash slot of a Redis
Cluster and one script can change them atomically. Every operation touches one batch.

Per batch (B):
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

Shared by all batches (each its own key; written after a batch's commit, and repaired by
the reconciler when a crash lost such a write):
  P:active           zset batch id -> when last announced: batches the reconciler still looks
                     at (until finished, with no outbox, lease or pending webhook left)
  P:list:{T}, P:list:{T}:s:{S}, P:list:{T}:q:{Q}
                     zsets batch id -> created_at: listings of tenant T ("*": all tenants)
  P:out              zset batch id -> earliest due outbox message (the relay's work)
  P:leases           zset batch id -> earliest lease expiry (the reaper's work)
  P:hooks            zset "batch id\\nwebhook id" -> next delivery attempt (the sender's work)
  P:qc               hash "tenant\\x1fqueue\\x1fstatus" -> queued / running jobs (gauges)
  P:idem:{T}:{key}   an Idempotency-Key record (JSON, with a TTL)
  P:installation:{N} a value made once for the installation (the generated webhook secret; no TTL)
The broker's streams are the broker's (app.broker.redis_streams); the store never names them.
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
