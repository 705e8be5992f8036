"""Process-local counters for /metrics (Prometheus sums them over replicas).

Counted after an operation has committed, never inside it: a store may run an operation
more than once (an optimistic retry), and a counter must not count the tries.
"""
from __future__ import annotations

from collections import Counter


class Metrics:
    HELP = {
        "batchq_batches_created_total": "Batches and chains created.",
        "batchq_messages_delivered_total": "Attempts handed to workers (started).",
        "batchq_reports_total": "Worker reports applied, by outcome (duplicates and refusals included).",
        "batchq_leases_expired_total": "Running attempts whose lease ran out.",
        "batchq_messages_republished_total": "Messages written again because the broker had lost them (reconciler).",
    }

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        if amount:
            self.counts[(name, tuple(sorted(labels.items())))] += amount

    def render(self) -> list[str]:
        lines = []
        for name, help_text in self.HELP.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            series = sorted((labels, n) for (metric, labels), n in self.counts.items() if metric == name)
            if not series:
                lines.append(f"{name} 0")
            for labels, n in series:
                rendered = ",".join(f'{k}="{v}"' for k, v in labels)
                lines.append(f"{name}{{{rendered}}} {n}" if rendered else f"{name} {n}")
        return lines
