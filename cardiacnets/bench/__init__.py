"""Benchmarks behind ``cardiacnets bench NAME``.

Each benchmark module defines ``add_arguments(parser)`` and ``run(args) -> dict``;
the dict is printed as JSON together with a description of the machine. Every
benchmark measures its baseline in the same run, so ratios compare like with like.
"""

from __future__ import annotations

import os
import platform
import time

BENCHMARKS: dict[str, str] = {
    "preprocess": "cardiacnets.bench.preprocess",
    "synth": "cardiacnets.bench.synth",
    "train": "cardiacnets.bench.train",
    "generate": "cardiacnets.bench.generate",
    "realism": "cardiacnets.bench.realism",
    "ceiling": "cardiacnets.bench.ceiling",
}


def machine_info() -> dict:
    """CPU count, thread settings and library versions, for the JSON header."""
    import numpy as np

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


class Timer:
    """Wall-clock timer as a context manager: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
