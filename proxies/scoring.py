"""Scoring a proxy: validation loss and accuracy per task, by position or by distance to the fact.

Text tasks are scored on every position and bucketed by position (later positions have more
context than a local window gives); probe tasks on their answers, bucketed by the distance back to
the fact or by the number of hops, as each task's registry entry says (see
:data:`spanmix.proxies.data.TASKS`).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import Tensor

from spanmix.proxies.data import IGNORE, DataConfig, TaskData
from spanmix.proxies.model import ProxyGPT
from spanmix.space import Schedule


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the schedule's result is a failure, not a number."""


def bucket_edges(seq_len: int) -> list[int]:
    """Position / distance buckets: [0, T/8), [T/8, T/4), [T/4, T/2), [T/2, T]."""
    return [0, seq_len // 8, seq_len // 4, seq_len // 2, seq_len + 1]


def bucket_names(seq_len: int) -> list[str]:
    edges = bucket_edges(seq_len)
    return [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])]


class Scorer:
    """Accumulates validation loss and accuracy per task and bucket, then reduces to scores."""

    def __init__(self, data: DataConfig) -> None:
        self.data = data
        self.sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])

    def update(self, logits: Tensor, batch: dict[str, Tensor]) -> None:
        y, dist = batch["y"], batch["dist"]
        scored = y != IGNORE
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="none")
        loss = loss.view_as(y)
        correct = (logits.argmax(-1) == y) & scored
        edges = torch.tensor(bucket_edges(self.data.seq_len))
        names = bucket_names(self.data.seq_len)
        positions = torch.arange(y.shape[1]).expand_as(y)
        for task_id, task in enumerate(self.data.tasks):
            rows = batch["task"] == task_id
            mask = scored & rows[:, None]
            if not mask.any():
                continue
            self._add(task, "all", loss[mask], correct[mask])
            bucket = self.data.task(task).bucket
            if bucket == "hops":
                keys = [f"{int(h)}hop" for h in dist[mask]]
            else:
                by = positions if bucket == "position" else dist
                keys = [names[i] for i in (torch.bucketize(by[mask], edges, right=True) - 1).tolist()]
            for key in sorted(set(keys)):
                sel = torch.tensor([k == key for k in keys])
                self._add(task, key, loss[mask][sel], correct[mask][sel])

    def _add(self, task: str, key: str, loss: Tensor, correct: Tensor) -> None:
        s = self.sums[(task, key)]
        s[0] += float(loss.sum())
        s[1] += float(correct.sum())
        s[2] += loss.numel()

    def scores(self) -> dict[str, float]:
        """``loss`` (mean of the tasks' losses), ``ppl``, ``long_loss`` (text: positions past T/2;
        recall tasks: the answers, all long-range), ``recall`` (mean answer accuracy over the recall
        tasks), and per task ``<task>/loss``, ``<task>/acc``, ``<task>/loss@<bucket>``, ``<task>/acc@<bucket>``."""
        out: dict[str, float] = {}
        for (task, key), (loss, correct, n) in sorted(self.sums.items()):
            suffix = "" if key == "all" else f"@{key}"
            out[f"{task}/loss{suffix}"] = loss / n
            if not self.data.is_text(task):
                out[f"{task}/acc{suffix}"] = correct / n
        tasks = self.data.tasks
        out["loss"] = sum(out[f"{t}/loss"] for t in tasks) / len(tasks)
        out["ppl"] = math.exp(min(out["loss"], 50.0))
        last = bucket_names(self.data.seq_len)[-1]
        long = [out.get(f"{t}/loss@{last}", out[f"{t}/loss"]) if self.data.is_text(t) else out[f"{t}/loss"] for t in tasks]
        out["long_loss"] = sum(long) / len(long)
        recall = [out[f"{t}/acc"] for t in tasks if not self.data.is_text(t)]
        if recall:
            out["recall"] = sum(recall) / len(recall)
        return out


@functools.lru_cache(maxsize=8)
def val_batches(data: DataConfig, batch_size: int) -> list[dict[str, Tensor]]:
    """The validation set as batches: ``val_samples`` per task, the same for every schedule scored
    (built once per process: scoring reads it and never changes it)."""
    loader = torch.utils.data.DataLoader(TaskData(data, "val", data.val_samples * len(data.tasks)), batch_size=batch_size)
    return list(loader)


@torch.no_grad()
def evaluate(model: ProxyGPT, schedule: Schedule, data: DataConfig, batches: list[dict[str, Tensor]], precision: str) -> dict[str, float]:
    """Score ``model``'s weights run under ``schedule`` on ``batches`` (see :meth:`Scorer.scores`)."""
    was_training = model.training
    model.eval()
    scorer = Scorer(data)
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            scorer.update(model(batch["x"], schedule).cpu(), {k: v.cpu() for k, v in batch.items()})
    model.train(was_training)
    scores = scorer.scores()
    if not all(math.isfinite(v) for v in scores.values()):
        raise TrainingDiverged(f"validation produced non-finite scores {scores}")
    return scores
