"""Turn a validated batch definition into job specs: the one place job forms are understood.

The forms come from the API's request models (`"Name"`, `["Name", "Compensation"]` or an
object with `name`, `args`, …); args are kept exactly as sent, nulls included.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app.domain.models import CompensationSpec


@dataclass
class JobSpec:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    compensation: CompensationSpec | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    queue: str | None = None


def compensation_spec(form: Any) -> CompensationSpec | None:
    if form is None:
        return None
    if isinstance(form, str):
        return CompensationSpec(name=form)
    return CompensationSpec(name=form.name, args=form.args, max_attempts=form.max_attempts)


def job_spec(form: Any) -> JobSpec:
    """One job from any accepted form."""
    if isinstance(form, str):
        return JobSpec(name=form)
    if isinstance(form, list):
        return JobSpec(name=form[0], compensation=compensation_spec(form[1] if len(form) > 1 else None))
    return JobSpec(
        name=form.name,
        args=form.args,
        compensation=compensation_spec(form.compensation),
        max_attempts=form.max_attempts,
        timeout_s=form.timeout_s,
        queue=form.queue,
    )


def job_specs(jobs: list[Any] | None, job: str | None = None, items: list[Any] | None = None) -> Iterator[JobSpec]:
    """Jobs of a definition, one at a time; the `job` + `items` shorthand makes one job per item.

    Every item is a value: null, false, 0, "" and [] each become a job like any other.
    """
    if jobs is not None:
        return (job_spec(form) for form in jobs)
    assert job is not None and items is not None
    return (JobSpec(name=job, args={"item": item}) for item in items)
