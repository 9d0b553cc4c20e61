"""Splitting a plan across processes or CI machines: deterministic, balanced by GPU cost, not by job count.

Pure Python: every process (or CI job) computes the same split from the same recipe, so no coordination is needed
to guarantee that each job renders exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .errors import UsageError
from .plan import Job, Plan

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based, as CI matrices count) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """`"2/4"` → Shard(2, 4); a clear UsageError otherwise."""
    match = _SHARD.match(text or "")
    if not match:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 1/4 (shards are numbered from 1)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard {text!r}: I must be between 1 and N (shards are numbered from 1)")
    return Shard(index, count)


def split(jobs: tuple[Job, ...], count: int) -> list[list[Job]]:
    """Longest-processing-time-first: the costliest job goes to the least loaded shard; ties by order.

    The split covers every job of the plan, skipped or not, so it does not depend on what is already on disk:
    processes that plan at slightly different moments still agree.
    """
    loads = [0] * count
    shards: list[list[Job]] = [[] for _ in range(count)]
    order = sorted(range(len(jobs)), key=lambda i: (-jobs[i].cost, i))
    for i in order:
        target = min(range(count), key=lambda s: (loads[s], s))
        loads[target] += jobs[i].cost
        shards[target].append(jobs[i])
    position = {job.id: i for i, job in enumerate(jobs)}
    return [sorted(shard, key=lambda j: position[j.id]) for shard in shards]


def select(plan: Plan, shard: Shard) -> Plan:
    """The part of `plan` that shard `shard` renders, in plan order."""
    if shard.count == 1:
        return plan
    return replace(plan, jobs=tuple(split(plan.jobs, shard.count)[shard.index - 1]))
