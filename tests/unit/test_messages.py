"""What a worker is sent (rules.build_message, rules.job_arguments): pure, no server."""
from __future__ import annotations

from app.domain.models import Batch, Job
from app.domain.rules import build_message, job_arguments
from app.domain.states import BatchType, JobKind, JobStatus


def batch(**kw) -> Batch:  # noqa: ANN003
    return Batch(id="b1", type=BatchType.PARALLEL, queue="default", context={"shared": "ctx", "tenant": "acme"}, **kw)


def job(kind: JobKind = JobKind.JOB, **kw) -> Job:  # noqa: ANN003
    return Job(
        batch_id="b1", position=3, name="Resize", queue="images", kind=kind, args={"shared": "mine", "size": 2},
        max_attempts=4, timeout_s=30.0, status=JobStatus.RUNNING, attempts=2, lease="L", lease_expires_at=90.0, **kw,
    )  # fmt: skip


def test_a_jobs_message_carries_context_args_and_coordinates():
    msg = build_message(batch(), job())
    assert msg == {
        "job_id": "b1.3", "batch_id": "b1", "attempt": 2, "lease": "L", "lease_expires_at": "1970-01-01T00:01:30Z",
        "name": "Resize", "kind": "job",
        # Shared context, then the job's own args (which win), then the coordinates.
        "args": {"shared": "mine", "tenant": "acme", "size": 2, "batch_id": "b1", "job_position": 3},
        "context": {"shared": "ctx", "tenant": "acme"}, "position": 3, "queue": "images", "timeout_s": 30.0,
        "max_attempts": 4,
    }  # fmt: skip


def test_coordinates_win_over_args_and_context():
    b = batch()
    b.context = {"batch_id": "ctx", "job_position": "ctx"}
    j = job()
    j.args = {"batch_id": "arg", "job_position": "arg"}
    assert job_arguments(b, j) == {"batch_id": "b1", "job_position": 3}


def test_a_compensations_message_carries_its_compensation_block_not_the_context():
    info = {"original_job_id": "b1.0", "error": "boom"}
    msg = build_message(batch(), job(JobKind.COMPENSATION, compensation_info=info))
    assert msg["args"] == {"shared": "mine", "size": 2, "batch_id": "b1", "_compensation": info}
    assert msg["compensation"] == info and msg["kind"] == "compensation"
    assert msg["context"] == {"shared": "ctx", "tenant": "acme"}


def test_a_callback_message_has_its_args_and_the_batch_id_only():
    msg = build_message(batch(), job(JobKind.CALLBACK, compensation_info={"ignored": True}))
    assert msg["args"] == {"shared": "mine", "size": 2, "batch_id": "b1"}
    assert "compensation" not in msg and msg["kind"] == "callback"


def test_a_compensation_without_info_has_no_block():
    msg = build_message(batch(), job(JobKind.COMPENSATION))
    assert "_compensation" not in msg["args"] and "compensation" not in msg


def test_traceparent_only_when_the_batch_has_one():
    assert "traceparent" not in build_message(batch(), job())
    assert "traceparent" not in build_message(batch(traceparent=""), job())
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert build_message(batch(traceparent=tp), job())["traceparent"] == tp
