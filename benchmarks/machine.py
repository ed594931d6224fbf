"""The machine and library versions a benchmark ran on, printed above its table."""

from __future__ import annotations

import os
import platform

import torch


def describe() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}\n"
        f"versions: python {platform.python_version()}, torch {torch.__version__}"
    )
