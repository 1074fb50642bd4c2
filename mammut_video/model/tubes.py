"""Sparse video tubes: kernel inflation and token positions (docs/architecture.md, "Tubes").

Every tube is a strided 3D convolution whose outputs become tokens. A token's position is the
centre of its receptive field, ``idx * stride + offset + kernel // 2`` in input pixels / frames.
Spatially it takes the pretrained 2D position table bilinearly sampled at that centre; videos
(T > 1) also add a learned per-frame table (``visual.time_embed``, zero at initialisation)
linearly sampled at the centre frame (exactly row ``frame`` when the clip has as many frames as
the table has rows).

:func:`sincos_1d` is the fixed temporal term of checkpoints saved before the learned table; a
checkpoint without ``visual.time_embed`` loads with the table set to it (:func:`sincos_time_table`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mammut_video.errors import ConfigError
from mammut_video.model.config import IMAGE_TUBE, TubeSpec


def inflate_kernel(weight: torch.Tensor, kernel: tuple[int, int, int]) -> torch.Tensor:
    """Inflate a 2D patch kernel into a 3D tube kernel.

    weight: (D, C, P, P) -> (D, C, kt, kh, kw). The spatial kernel is resized bilinearly and scaled by
    P*P / (kh*kw); a uniform correction then makes each (D, C) slice sum exactly to the 2D kernel's
    sum (bilinear resizing alone only preserves it approximately, e.g. 16 -> 12). The result is
    repeated kt times along time and divided by kt, so a constant-colour clip gives the same
    response as the image kernel.
    """
    kt, kh, kw = kernel
    d, c, p, q = weight.shape
    w = weight.detach().float()
    if (kh, kw) != (p, q):
        resized = F.interpolate(w, size=(kh, kw), mode="bilinear", align_corners=False, antialias=kh < p or kw < q)
    else:
        resized = w.clone()
    resized = resized * (p * q) / (kh * kw)
    deficit = w.sum(dim=(2, 3), keepdim=True) - resized.sum(dim=(2, 3), keepdim=True)
    resized = resized + deficit / (kh * kw)
    out = resized.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
    return out.to(weight.dtype)


def tube_centres(tube: TubeSpec, t: int, h: int, w: int) -> torch.Tensor:
    """Centres of all tokens of one tube as float (N, 3) in (frame, y, x), tokens in (t, h, w) order."""
    axes = []
    for n, k, s, o in zip(tube.grid(t, h, w), tube.kernel, tube.stride, tube.offset):
        axes.append(torch.arange(n, dtype=torch.float64) * s + o + k // 2)
    grid = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grid], dim=-1)


def linear_matrix(coords: torch.Tensor, table_len: int, size: int) -> torch.Tensor:
    """Weights that linearly sample a (table_len, D) table at positions along one axis of ``size``.

    coords: (N,) positions in input units (pixels, frames) -> (N, table_len) float64 matrix.
    Position ``c`` maps to table coordinate ``(c + 0.5) * table_len / size - 0.5`` (row i is
    centred on ``(i + 0.5) * size / table_len``), clamped to the table; at a row centre the weights
    are exactly one-hot, so a table with one row per unit is read unchanged.
    """
    u = ((coords.to(torch.float64) + 0.5) * table_len / size - 0.5).clamp(0, table_len - 1)
    lo = u.floor().long()
    hi = (lo + 1).clamp(max=table_len - 1)
    frac = u - lo
    m = torch.zeros(coords.shape[0], table_len, dtype=torch.float64)
    rows = torch.arange(coords.shape[0])
    m.index_put_((rows, lo), 1 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m


def bilinear_matrix(yx: torch.Tensor, grid_hw: tuple[int, int], image_hw: tuple[int, int]) -> torch.Tensor:
    """Weights that bilinearly sample a (Gh*Gw, D) table at pixel centres.

    yx: (N, 2) pixel coordinates -> (N, Gh*Gw) float64 matrix: the outer product of the
    :func:`linear_matrix` weights along y and along x. Pixel ``c`` maps to grid coordinate
    ``c * G / size - 0.5`` (the cell centre convention of :func:`linear_matrix` for a pixel
    centre ``c - 0.5``), clamped to the table. At a cell centre the weights are exactly one-hot,
    so the image tube reads the table unchanged.
    """
    (gh, gw), (h, w) = grid_hw, image_hw
    wy = linear_matrix(yx[:, 0] - 0.5, gh, h)
    wx = linear_matrix(yx[:, 1] - 0.5, gw, w)
    return (wy[:, :, None] * wx[:, None, :]).reshape(yx.shape[0], gh * gw)


def sincos_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed sin-cos embedding of scalar positions: (N,) -> (N, dim), [sin | cos] halves."""
    if dim % 2:
        raise ConfigError(f"sin-cos embedding needs an even width, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim // 2)
    omega = 1.0 / temperature ** omega
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_time_table(num_frames: int, dim: int) -> torch.Tensor:
    """The fixed temporal term of checkpoints saved before ``visual.time_embed`` existed, as a table.

    Row f is :func:`sincos_1d` of frame f: (num_frames, dim). Loaded into the learned table it
    reproduces exactly the old positions for clips of ``num_frames`` frames.
    """
    return sincos_1d(torch.arange(num_frames), dim)


def active_tubes(tubes: list[TubeSpec], t: int, h: int, w: int) -> list[TubeSpec]:
    """Tubes used for a (t, h, w) input.

    An image (t == 1) uses the image tube alone, so it goes through exactly the pretrained ViT.
    For a video, tubes whose kernel is longer than the clip are skipped.
    """
    if t == 1:
        return [tube for tube in tubes if tube.name == IMAGE_TUBE]
    return [tube for tube in tubes if math.prod(tube.grid(t, h, w)) > 0]


def num_tokens(tubes: list[TubeSpec], t: int, h: int, w: int, cls_token: bool = True) -> int:
    """Token count of a (t, h, w) clip through this tube set (+1 for CLS)."""
    return sum(math.prod(tube.grid(t, h, w)) for tube in active_tubes(tubes, t, h, w)) + int(cls_token)
