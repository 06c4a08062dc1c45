"""Where a site trains: the GPU its pod was given, or the CPU (``task.device``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fedkube.errors import ModelError


def resolve_device(asked: str) -> torch.device:
    """``auto``: the first CUDA device when torch sees one, else the CPU. ``cuda`` on a site
    without one is refused: the job's author asked for a GPU, and a silent CPU run could take
    many times longer than the round timeout allows."""
    if asked == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if asked == "cuda":
        raise ModelError(
            "task.device is cuda, but this site's trainer sees no CUDA device "
            "(torch.cuda.is_available() is False): give its pod a GPU "
            "(spec.pods.trainer.gpus, within the site's Helm value site.gpus.max), install a "
            "CUDA build of torch, or set task.device: auto"
        )
    return torch.device("cpu")


@contextlib.contextmanager
def autocast(device: torch.device, mixed_precision: bool) -> Iterator[None]:
    """bfloat16 autocast on a GPU when the job asks for mixed precision; nothing otherwise
    (weights, optimiser state and updates stay float32 either way)."""
    if mixed_precision and device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield
