"""Numeric precision of a run: fp32, bf16 or fp16 autocast, with the default that fits the device.

bf16 autocast on a CPU without bf16 instructions was measured 3-10x slower than fp32 (and 1.7-1.9x
faster for a training step on an AMD EPYC with AVX512-BF16), so the CPU default is fp32, which every
CPU runs well and bit-comparably, and the CUDA default bf16. fp16 is for GPUs (training also needs a
gradient scaler, which the trainer adds).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mammut_video.errors import ConfigError
from mammut_video.runtime.devices import check_device_name

if TYPE_CHECKING:
    import torch

PRECISIONS = ("fp32", "bf16", "fp16")


def check_precision(name: str) -> str:
    """``name`` if it is fp32, bf16 or fp16; otherwise :class:`ConfigError`."""
    if name not in PRECISIONS:
        raise ConfigError(f"precision {name!r}: expected fp32, bf16 or fp16")
    return name


def check_device_and_precision(device: str | None, precision: str | None) -> None:
    """The device and precision every command's settings take; None means the default (see
    :func:`~mammut_video.runtime.devices.resolve_device` and :func:`default_precision`)."""
    if device is not None:
        check_device_name(device)
    if precision is not None:
        check_precision(precision)


def default_precision(device: "torch.device") -> str:
    """fp32 on the CPU, bf16 on CUDA."""
    return "bf16" if device.type == "cuda" else "fp32"


def autocast(device: "torch.device", precision: str | None) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (None: :func:`default_precision`); fp32 is a no-op."""
    import torch

    precision = check_precision(precision or default_precision(device))
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def inference_autocast(device: "torch.device", precision: str | None) -> Iterator[None]:
    """No autograd and :func:`autocast`: how answers, captions, scores and embeddings are computed.

    ``torch.no_grad``, not ``torch.inference_mode``: autocast keeps a parameter's bf16/fp16 copy for
    the rest of the context only outside inference mode. Inside it every decoding step casts every
    weight again (B-16, one clip, bf16 on the CPU: 84-87 ms per generated token instead of 39-41).
    """
    import torch

    with torch.no_grad(), autocast(device, precision):
        yield
