"""Was the machine ours while we measured? CPU time that other processes used, and time the
hypervisor stole, over a stretch of benchmarking (Linux /proc/stat; elsewhere nothing is
known and nothing is claimed). A figure measured while others competed for the cores is not
a figure about mlp, so the report flags it rather than printing it as a fact."""
from __future__ import annotations

import os
import time

# Other processes' CPU time, as a share of every core's time, above which a stretch counts as
# contended; and the same for stolen time. A quiet 2-core machine measured 0.3% others and 0.3-0.6%
# stolen over two 24 s rounds of `mlp bench`.
OTHERS_LIMIT = 0.05
STEAL_LIMIT = 0.02


def _cpu_jiffies():
    """(busy, steal, total) jiffies of all cores since boot, or None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def _own_seconds():
    """CPU seconds of this process and its finished children (the reference subprocesses)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Sampler:
    """Call `start()`, benchmark, then `stop()` for one stretch's record (a dict)."""

    def start(self):
        self._jiffies, self._own, self._clock = _cpu_jiffies(), _own_seconds(), time.monotonic()
        return self

    def stop(self) -> dict:
        end = _cpu_jiffies()
        wall = time.monotonic() - self._clock
        record = {"seconds": wall, "load_average": _load_average()}
        if end is None or self._jiffies is None or end[2] <= self._jiffies[2]:
            return {**record, "others_cpu_share": None, "steal_share": None, "contended": None}
        busy, steal, total = (b - a for a, b in zip(self._jiffies, end))
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        others = max(0.0, busy / tick - (_own_seconds() - self._own)) / (total / tick)
        stolen = steal / total
        return {**record, "others_cpu_share": others, "steal_share": stolen,
                "contended": others > OTHERS_LIMIT or stolen > STEAL_LIMIT}


def _load_average():
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def summary(records) -> dict:
    """The run's verdict from its stretches: contended if any stretch was, None if unknown."""
    known = [r for r in records if r["contended"] is not None]
    return {"contended": any(r["contended"] for r in known) if known else None,
            "worst_others_cpu_share": max((r["others_cpu_share"] for r in known), default=None),
            "worst_steal_share": max((r["steal_share"] for r in known), default=None),
            "stretches": records}


def warning(verdict) -> str | None:
    """One line for the table and stderr when the run was contended."""
    if not verdict["contended"]:
        return None
    return (f"WARNING: other processes used up to {100 * verdict['worst_others_cpu_share']:.0f}% of the CPU "
            f"(steal up to {100 * verdict['worst_steal_share']:.0f}%) while this ran: these figures, and the "
            "ratios most of all, are not about mlp alone; run it again on a quiet machine")
