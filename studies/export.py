"""Exporting a chosen schedule: JSON, a Hugging Face config fragment, and the line that builds it."""

from __future__ import annotations

import json
from typing import Any

from proxies import ProxyConfig
from space import ConfigError, Schedule


def hf_fragment(schedule: Schedule) -> dict[str, Any]:
    """``layer_types`` and ``sliding_window`` as Qwen2, Gemma 3, Mistral-style configs read them.

    Hugging Face's sliding window of w lets a token see itself and the w-1 before it, as spanmix's
    ``S<w>`` does. It has one window per model and no block-sparse layers; those are refused.
    """
    for i, layer in enumerate(schedule.layers):
        if layer.kind == "block":
            raise ConfigError(
                f"layer {i} is block-sparse ({layer.token}): Hugging Face configs cannot express MASFormer "
                "blocks; export the JSON schedule and build the spanmix module instead"
            )
    windows = schedule.windows
    if len(windows) > 1:
        raise ConfigError(f"Hugging Face configs take one sliding_window; this schedule uses {list(windows)}")
    fragment = {
        "num_hidden_layers": schedule.n_layers,
        "layer_types": ["full_attention" if layer.is_full else "sliding_attention" for layer in schedule.layers],
        "use_sliding_window": bool(windows),
    }
    if windows:  # all-full: leave the family's default; Gemma 3's model fails on a null sliding_window
        fragment["sliding_window"] = windows[0]
    return fragment


def python_line(proxy: ProxyConfig, schedule: Schedule) -> str:
    return (
        "from proxies import ProxyConfig, build_model; "
        f"model = build_model(ProxyConfig(**{json.dumps(proxy.to_dict())}), {schedule.text!r})"
    )
