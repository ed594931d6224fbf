import logging

import pytest

logging.getLogger("lightning").setLevel(logging.ERROR)

TINY = """
[study]
name = "{name}"
quality = "loss"
cost = "{cost}"
sampler = "{sampler}"
strategy = "{strategy}"
n_trials = {n_trials}
seed = 0
heartbeat_seconds = 1
# a few steps separate nothing: calibration is tested on a budget that does, in test_calibration.py
calibrate = false

[space]
n_layers = 2
context = 32
n_full = [0, 2]
placements = ["bottom", "top"]
windows = [4, 8]
local = ["sliding"]

[proxy]
d_model = 32
n_heads = 2
context = 32

[data]
tasks = ["recall"]
seq_len = 32
n_pairs = 4
n_queries = 4
min_distance = 8
val_samples = 4

[train]
steps = {steps}
batch_size = 4
precision = "fp32"
"""


@pytest.fixture
def tiny_config(tmp_path):
    """Write a tiny study config (2 layers, 32 tokens; its space holds 7 schedules) and return its path."""

    def make(name="tiny", sampler="nsga2", n_trials=4, steps=3, cost="flops", extra="", strategy="standalone"):
        path = tmp_path / f"{name}.toml"
        text = TINY.format(name=name, sampler=sampler, n_trials=n_trials, steps=steps, cost=cost, strategy=strategy)
        path.write_text(text + extra)
        return path

    return make
