"""A pretrained Hugging Face decoder run under any spanmix schedule.

:func:`apply_schedule` makes each decoder layer of a transformers causal LM attend as a schedule
says, through transformers' attention interface: spanmix registers an attention function
(``"spanmix"``) that reads its layer's kind (set on the layer's attention module by
``layer_idx``) and runs full causal attention or spanmix's own local kernels (sliding window or
MASFormer blocks), with grouped-query heads. The checkpoint's weights, its rotary embeddings (per
layer type, as Gemma 3 has them), norms and scaling stay the family's own; only which keys each
query sees changes, so every schedule spanmix can express runs, several windows included.
Attention sinks (GPT-OSS) are honoured through the kernels' log-sum-exp.

Scoring a schedule evaluates whole sequences, so the function serves full forward passes
(prefill) without a padding mask; a generation step with a KV cache is refused. Zero-shot
scoring can keep each layer's output so that the next schedule runs only from its first layer
that differs (:class:`PrefixCache`).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from spanmix.proxies.attention import (
    full_attention,
    local_attention,
    local_attention_with_lse,
)
from spanmix.proxies.data import DataConfig
from spanmix.proxies.scoring import evaluate, val_batches
from spanmix.space import ConfigError, Layer, Schedule

ATTENTION = "spanmix"  # the name spanmix's attention function is registered under in transformers


def spanmix_attention(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                      dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[Tensor, None]:
    """transformers' attention signature: (batch, heads, T, head_dim) queries, (batch, kv_heads,
    T, head_dim) keys and values, already rotated; returns (batch, T, heads, head_dim)."""
    layer: Layer | None = getattr(module, "spanmix_layer", None)
    if layer is None:
        raise ConfigError(f"layer {getattr(module, 'layer_idx', '?')} has no spanmix schedule; call apply_schedule first")
    if query.shape[2] != key.shape[2]:
        raise ConfigError("spanmix attention scores whole sequences (a full forward pass); generation with a KV "
                          "cache is not supported")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: each key-value head serves `groups` query heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    head_dim = query.shape[-1]
    if scaling is not None:  # the kernels scale by head_dim ** -0.5; the family may scale otherwise
        query = query * (scaling * head_dim**0.5)
    sinks = getattr(module, "sinks", None)
    if sinks is not None:  # a learned logit per head in every softmax's denominator (GPT-OSS)
        window = layer.window if layer.window is not None else query.shape[2]
        out, lse = local_attention_with_lse(query, key, value, window, layer.kind == "block", layer.sinks)
        out = out * torch.sigmoid(lse - sinks.view(1, -1, 1).to(lse.dtype)).unsqueeze(-1).to(out.dtype)
    elif layer.is_full:
        out = full_attention(query, key, value)
    else:
        out = local_attention(query, key, value, layer.window, layer.kind == "block", layer.sinks)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    """The masks transformers would build for this implementation: none, the kernels know their pattern."""
    return None


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder layers of a transformers causal LM (``model.model.layers`` in every supported family)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(f"{type(model).__name__} is not a decoder spanmix can retrofit (no model.layers)")
    return layers


def apply_schedule(model: torch.nn.Module, schedule: Schedule | str) -> torch.nn.Module:
    """Run ``model`` (a transformers causal LM) under ``schedule`` from now on, in place; returns it."""
    from transformers import AttentionInterface, AttentionMaskInterface

    if isinstance(schedule, str):
        schedule = Schedule.parse(schedule)
    layers = decoder_layers(model)
    if len(layers) != schedule.n_layers:
        raise ConfigError(f"the schedule has {schedule.n_layers} layers and the model {len(layers)} "
                          f"(num_hidden_layers); they must match")
    for block, layer in zip(layers, schedule.layers):
        attention = getattr(block, "self_attn", None)
        if attention is None:
            raise ConfigError(f"{type(block).__name__} has no self_attn: not a decoder layer spanmix can retrofit")
        attention.spanmix_layer = layer
    _follow_layer_types(model, schedule)
    model.spanmix_schedule = schedule
    AttentionInterface.register(ATTENTION, spanmix_attention)
    AttentionMaskInterface.register(ATTENTION, _no_mask)
    model.set_attn_implementation(ATTENTION)
    return model


# Hugging Face's name of each spanmix layer kind in ``layer_types``: the one map of them, which the
# retrofit follows and export writes
TYPE_NAMES = {"full": "full_attention", "sliding": "sliding_attention", "block": "chunked_attention"}


def _follow_layer_types(model: torch.nn.Module, schedule: Schedule) -> None:
    """Set the config's ``layer_types`` to the schedule's, where the family knows the type: what a
    family reads per layer type besides the mask (Gemma 3's rotary base: its ``rope_parameters``
    are keyed by type) then follows the schedule, as it will in a config exported with it. A type
    the family does not know (a block layer in Gemma 3) keeps the checkpoint's own."""
    config = model.config
    own = getattr(model, "spanmix_layer_types", None) or getattr(config, "layer_types", None)
    if not own:
        return
    model.spanmix_layer_types = list(own)
    rope = getattr(config, "rope_parameters", None)
    by_type = isinstance(rope, dict) and all(isinstance(v, dict) for v in rope.values())
    known = set(own) | (set(rope) if by_type else set())
    config.layer_types = [TYPE_NAMES[layer.kind] if TYPE_NAMES[layer.kind] in known else original
                          for layer, original in zip(schedule.layers, own)]
    rotary = getattr(model.model, "rotary_emb", None)
    built = getattr(rotary, "rope_type", None)
    if by_type and isinstance(built, dict) and not set(config.layer_types) <= set(built):
        # the family builds a rotary table per type present at construction; a type new to this
        # checkpoint gets its table from rope_parameters, as loading the exported config would
        device = next(iter(rotary.buffers())).device
        model.model.rotary_emb = type(rotary)(config=config, device=device)


class Retrofitted(torch.nn.Module):
    """A transformers causal LM called as spanmix calls its proxies, ``(ids, schedule) -> logits``,
    so spanmix's scoring runs on it unchanged. With ``reuse`` (weights that never change: zero-shot
    scoring), each layer's output is kept and a later schedule reuses it (see :class:`PrefixCache`)."""

    def __init__(self, model: torch.nn.Module, reuse: bool = False) -> None:
        super().__init__()
        self.model = model
        self.cache = PrefixCache.of(model) if reuse else None

    @property
    def schedule(self) -> Schedule | None:
        """The schedule the model runs now (whoever applied it)."""
        return getattr(self.model, "spanmix_schedule", None)

    def forward(self, idx: Tensor, schedule: Schedule | None = None, keep: Tensor | None = None) -> Tensor:
        """Logits for ``idx`` under ``schedule`` (default: the one applied last), at the positions
        ``keep`` alone where it is given (the family's own ``logits_to_keep``)."""
        if schedule is not None and schedule != self.schedule:
            apply_schedule(self.model, schedule)
        kept = 0 if keep is None else keep  # transformers' 0: every position
        if self.cache is None or self.schedule is None:
            return self.model(input_ids=idx, logits_to_keep=kept).logits
        with self.cache.scoring(idx, self.schedule):
            return self.model(input_ids=idx, logits_to_keep=kept).logits


class PrefixCache:
    """The hidden states leaving each decoder layer, for each batch of ids, by the kinds of the
    layers up to it (its prefix): a layer's output depends on nothing else, so a schedule that
    shares its first ``j`` layers with one scored before takes their outputs instead of running
    them, and runs only from its first layer unlike every schedule held. In a layer-wise search
    (one layer changed a step) that saves about half of every forward. Exact (the same
    operations, skipped), and only for weights that never change. The states of the ``SLOTS``
    most recently used prefixes per layer are held (least recently used out first).

    Attributes:
        computed: decoder-layer forwards run; reused: those taken from the cache instead.
    """

    SLOTS = 4  # prefixes held per layer and batch: the memory is SLOTS x L hidden states per batch

    @classmethod
    def of(cls, model: torch.nn.Module) -> PrefixCache:
        """The model's cache, made (and its layers wrapped) once."""
        if getattr(model, "spanmix_prefix_cache", None) is None:
            model.spanmix_prefix_cache = cls(model)
        return model.spanmix_prefix_cache

    def __init__(self, model: torch.nn.Module) -> None:
        blocks = decoder_layers(model)
        self.layers = len(blocks)
        self.states: dict[bytes, collections.OrderedDict[tuple[Layer, ...], Any]] = {}
        self.computed = self.reused = 0
        self._batch: bytes | None = None
        self._schedule: Schedule | None = None
        for j, block in enumerate(blocks):
            block.forward = self._cached(j, block.forward)

    def _cached(self, j: int, forward: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            if self._schedule is None:  # outside scoring (a count on the same model): run as it is
                return forward(*args, **kwargs)
            prefix, held = self._schedule.layers[: j + 1], self.states.setdefault(self._batch, collections.OrderedDict())  # type: ignore[arg-type]
            if prefix in held:
                held.move_to_end(prefix)
                self.reused += 1
                return held[prefix]
            out = held[prefix] = forward(*args, **kwargs)
            if len(held) > self.SLOTS * self.layers:
                held.popitem(last=False)
            self.computed += 1
            return out

        return run

    @contextlib.contextmanager
    def scoring(self, idx: Tensor, schedule: Schedule) -> Iterator[None]:
        """Within it, the layers read and fill the cache for these ids under ``schedule``."""
        self._batch = hashlib.blake2b(repr(tuple(idx.shape)).encode() + idx.cpu().numpy().tobytes(), digest_size=16).digest()
        self._schedule = schedule
        try:
            yield
        finally:
            self._batch, self._schedule = None, None


def zero_shot(model: torch.nn.Module, schedule: Schedule | str, data: DataConfig, batch_size: int = 8) -> dict[str, float]:
    """The scores spanmix gives a proxy (loss, by position, each probe's answer loss and accuracy)
    for a pretrained ``model`` run under ``schedule`` as it is, with no training: ``data``'s
    validation sequences, the same for every schedule. Deterministic."""
    if isinstance(schedule, str):
        schedule = Schedule.parse(schedule)
    vocab = model.get_input_embeddings().num_embeddings
    if data.vocab_needed() > vocab:
        raise ConfigError(f"data: token ids up to {data.vocab_needed() - 1} do not fit the model's vocabulary of {vocab}; "
                          "give data.tokenizer the checkpoint's own tokenizer.json")
    return evaluate(Retrofitted(model), schedule, data, val_batches(data, batch_size), "fp32")
