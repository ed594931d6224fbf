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

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from spanmix.proxies.data import IGNORE, DataConfig, TaskData
from spanmix.space import Schedule

RESAMPLES = 400  # bootstrap resamples of the validation sequences a deterministic score is given


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the schedule's result is a failure, not a number."""


def bucket_edges(seq_len: int) -> list[int]:
    """Position / distance buckets: [0, T/8), [T/8, T/4), [T/4, T/2), [T/2, T]."""
    return [0, seq_len // 8, seq_len // 4, seq_len // 2, seq_len + 1]


def bucket_names(seq_len: int) -> list[str]:
    edges = bucket_edges(seq_len)
    return [f"{lo}-{hi - 1}" for lo, hi in zip(edges, edges[1:])]


class Scorer:
    """Accumulates validation loss and accuracy per sequence, task and bucket, then reduces them
    to scores: over every sequence (:meth:`scores`), or over bootstrap resamples of the sequences
    (:meth:`resamples`), the sampling error of scores that have no other noise."""

    def __init__(self, data: DataConfig) -> None:
        self.data = data
        # per validation sequence, in order: its task, and (loss sum, correct, count) by (task, bucket)
        self.tasks: list[str] = []
        self.rows: list[dict[tuple[str, str], tuple[float, float, int]]] = []

    def update(self, logits: Tensor, batch: dict[str, Tensor], columns: Tensor | None = None) -> None:
        """Add a batch's sequences; ``logits`` are at every position, or at ``columns`` alone (see
        :func:`answer_columns`)."""
        y, dist = batch["y"], batch["dist"]
        positions = torch.arange(y.shape[1]).expand_as(y)
        if columns is not None:
            y, dist, positions = y[:, columns], dist[:, columns], positions[:, columns]
        scored = y != IGNORE
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="none")
        loss = loss.view_as(y)
        correct = ((logits.argmax(-1) == y) & scored).float()
        edges = torch.tensor(bucket_edges(self.data.seq_len))
        names = bucket_names(self.data.seq_len)
        positions = positions.contiguous()
        rows: list[dict[tuple[str, str], tuple[float, float, int]]] = [{} for _ in range(len(y))]
        for task_id, task in enumerate(self.data.tasks):
            mask = scored & (batch["task"] == task_id)[:, None]
            if not mask.any():
                continue
            bucket = self.data.task(task).bucket
            if bucket == "hops":
                keys = {f"{h}hop": dist == h for h in sorted(set(dist[mask].tolist()))}
            else:
                index = torch.bucketize(positions if bucket == "position" else dist, edges, right=True) - 1
                keys = {names[i]: index == i for i in sorted(set(index[mask].tolist()))}
            for key, where in {"all": mask, **{k: mask & w for k, w in keys.items()}}.items():
                sums = zip((loss * where).sum(1).tolist(), (correct * where).sum(1).tolist(), where.sum(1).tolist())
                for row, (lo, co, n) in zip(rows, sums):
                    if n:
                        row[(task, key)] = (lo, co, n)
        self.tasks += [self.data.tasks[int(t)] for t in batch["task"]]
        self.rows += rows

    def scores(self) -> dict[str, float]:
        """``loss`` (mean of the tasks' losses), ``ppl``, ``long_loss`` (text: positions past T/2;
        recall tasks: the answers, all long-range), ``recall`` (mean answer accuracy over the recall
        tasks), and per task ``<task>/loss``, ``<task>/acc``, ``<task>/loss@<bucket>``, ``<task>/acc@<bucket>``.
        Raises :class:`TrainingDiverged` when any is not finite."""
        keys, table = self._table()
        scores = self._reduce(dict(zip(keys, table.sum(0).tolist())))
        if not all(math.isfinite(v) for v in scores.values()):
            raise TrainingDiverged(f"validation produced non-finite scores {scores}")
        return scores

    def resamples(self, n: int = RESAMPLES, seed: int = 0) -> dict[str, list[float]]:
        """The scores without a bucket (``loss``, ``long_loss``, ``recall``, ``<task>/loss``, ...)
        on ``n`` bootstrap resamples of the validation sequences, drawn with replacement within
        each task so that every resample keeps the tasks' shares. The draws depend only on
        ``seed`` and the sequences' tasks, so resample ``i`` of two schedules scored on the same
        sequences is the same resample: their difference is a paired bootstrap."""
        keys, table = self._table()
        rng, weights = np.random.default_rng(seed), np.zeros((n, len(self.rows)))
        for task in self.data.tasks:
            members = np.array([i for i, t in enumerate(self.tasks) if t == task])
            if len(members):
                drawn = members[rng.integers(len(members), size=(n, len(members)))]
                np.add.at(weights, (np.arange(n)[:, None], drawn), 1.0)
        resampled = np.einsum("nr,rkc->nkc", weights, table)
        out: dict[str, list[float]] = defaultdict(list)
        for sums in resampled:
            for name, value in self._reduce(dict(zip(keys, sums.tolist()))).items():
                if "@" not in name:
                    out[name].append(value)
        return dict(out)

    def _table(self) -> tuple[list[tuple[str, str]], np.ndarray]:
        """Every (task, bucket) any sequence reaches, and the (sequences, keys, 3) array of each
        sequence's (loss sum, correct, count) for each (zeros where it has none)."""
        keys = sorted({k for row in self.rows for k in row})
        return keys, np.array([[row.get(k, (0.0, 0.0, 0)) for k in keys] for row in self.rows], dtype=np.float64)

    def _reduce(self, sums: dict[tuple[str, str], list[float]]) -> dict[str, float]:
        out: dict[str, float] = {}
        for (task, key), (loss, correct, n) in sorted(sums.items()):
            if not n:  # a bucket no sequence of a resample reaches
                continue
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


def answer_columns(y: Tensor) -> Tensor | None:
    """The positions some sequence of the batch is scored at, or None where that is every one (a
    text task). A probe scores its answers alone, so the head over the whole vocabulary, its loss
    and its argmax run at those positions only (for SmolLM2's 49,152 tokens at T=1024 the head is
    about a fifth of a forward's multiply-adds, and its logits 1.6 GB a batch of 8 in fp32)."""
    columns = (y != IGNORE).any(0).nonzero().squeeze(1)
    return columns if len(columns) < y.shape[1] else None


@torch.no_grad()
def score_batches(model: torch.nn.Module, schedule: Schedule, data: DataConfig, batches: list[dict[str, Tensor]],
                  precision: str, every_position: bool = False) -> Scorer:
    """Run ``model``'s weights under ``schedule`` on ``batches``, scored (see :class:`Scorer`);
    the logits at the scored positions alone (:func:`answer_columns`), or with ``every_position``
    at all of them (the same scores: what the benchmark compares it with)."""
    was_training = model.training
    model.eval()
    scorer = Scorer(data)
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            keep = None if every_position else answer_columns(batch["y"])
            scorer.update(model(batch["x"], schedule, keep).cpu(), {k: v.cpu() for k, v in batch.items()},
                          None if keep is None else keep.cpu())
    model.train(was_training)
    return scorer


def evaluate(model: torch.nn.Module, schedule: Schedule, data: DataConfig, batches: list[dict[str, Tensor]],
             precision: str) -> dict[str, float]:
    """``model``'s scores under ``schedule`` on ``batches`` (see :meth:`Scorer.scores`)."""
    return score_batches(model, schedule, data, batches, precision).scores()
