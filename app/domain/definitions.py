"""Turn a validated batch definition into job specs: the one place job forms are understood."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobSpec:
    name: str
    args: dict[str, Any] = field(default_factory=dict)
    compensation: dict[str, Any] | None = None  # {"name", "args"}
    max_attempts: int | None = None
    timeout_s: float | None = None
    queue: str | None = None


def _compensation(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {"name": value, "args": {}}
    spec = {"name": value["name"], "args": dict(value.get("args") or {})}
    if value.get("max_attempts"):
        spec["max_attempts"] = value["max_attempts"]
    return spec


def job_spec(form: Any) -> JobSpec:
    """One job from any accepted form: "Name", ["Name", "Comp"] or a {name, ...} object."""
    if isinstance(form, str):
        return JobSpec(name=form)
    if isinstance(form, list):
        return JobSpec(name=form[0], compensation=_compensation(form[1] if len(form) > 1 else None))
    return JobSpec(
        name=form["name"],
        args=dict(form.get("args") or {}),
        compensation=_compensation(form.get("compensation")),
        max_attempts=form.get("max_attempts"),
        timeout_s=form.get("timeout_s"),
        queue=form.get("queue"),
    )


def job_specs(jobs: list[Any] | None, job: str | None = None, items: list[Any] | None = None) -> list[JobSpec]:
    """Jobs of a definition; the `job` + `items` shorthand makes one job per item.

    Every item is a value: null, false, 0, "" and [] each become a job like any other.
    """
    if jobs is not None:
        return [job_spec(form) for form in jobs]
    assert job is not None and items is not None
    return [JobSpec(name=job, args={"item": item}) for item in items]
