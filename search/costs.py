"""What a trial records of a schedule's cost: the study's cost, and its ratio to the all-full schedule's."""

from __future__ import annotations

import functools
from typing import Any

from spanmix.search.config import StudyConfig
from spanmix.space import Layer, Schedule


@functools.lru_cache(maxsize=32)
def _full_latency(cfg: StudyConfig, n_layers: int) -> float:
    return cfg.subject.latency(Schedule((Layer("full"),) * n_layers), cfg.data.seq_len)


def cost_of(cfg: StudyConfig, schedule: Schedule) -> tuple[float, float, dict[str, Any]]:
    """(cost, cost relative to the all-full schedule, the counted report)."""
    report = cfg.count(schedule)
    if cfg.cost == "latency":
        ms = cfg.subject.latency(schedule, cfg.data.seq_len)
        return ms, ms / _full_latency(cfg, len(schedule)), report.to_dict()
    value, full = {
        "flops": (report.total, report.full_total),
        "prefill_flops": (report.total, report.full_total),
        "decode_flops": (report.decode, report.full_decode),
        "attention_flops": (report.attention, report.full_attention),
        "kv_cache": (report.kv_cache_bytes, report.full_kv_cache_bytes),
    }[cfg.cost]
    return float(value), value / full, report.to_dict()


# the part of the counted report a trial keeps (the per-layer table is recomputed on demand)
REPORTED = ("total", "attention", "decode", "kv_cache_bytes", "ratio", "attention_ratio", "decode_ratio", "kv_ratio")
