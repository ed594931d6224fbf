"""spanmix.proxies: the proxy transformer built from a schedule, its cost, and its training.

Knows torch and Lightning, never Optuna.
"""

from spanmix.proxies.attention import (
    full_attention,
    local_attention,
    reference_attention,
)
from spanmix.proxies.cost import (
    CostReport,
    closed_form,
    count,
    kv_cache_bytes,
    measure_latency,
)
from spanmix.proxies.model import ProxyConfig, ProxyGPT, build_model
from spanmix.space import ConfigError

__all__ = [
    "ConfigError",
    "CostReport",
    "ProxyConfig",
    "ProxyGPT",
    "build_model",
    "closed_form",
    "count",
    "full_attention",
    "kv_cache_bytes",
    "local_attention",
    "measure_latency",
    "reference_attention",
]
