"""Clip transforms: uint8 (T, H, W, C) frames -> normalised float (C, T, H, W) model input.

Built on torchvision.transforms.v2, which treats a (T, C, H, W) tensor as a batch of images
and draws ONE set of random parameters per call: every frame of a clip gets the same crop
and the same flip.

    eval:  resize shorter side -> centre crop -> float in [0, 1] -> normalise
    train: random resized crop (area ``scale``, aspect 3/4..4/3) -> random horizontal flip
           -> float in [0, 1] -> normalise

Resizing runs on uint8 (as PIL does for image models), with antialiasing; frames smaller
than the crop (a 176x144 clip for a 224 model) are upsampled, portrait frames are resized
by their width.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from mammut_video.errors import ConfigError
from mammut_video.video.normalization import CLIP_MEAN, CLIP_STD


class ClipTransform:
    """Callable clip transform; see the module docstring for the steps.

    Args:
        image_size: output height and width.
        mean, std: per-channel normalisation (RGB, for values in [0, 1]).
        train: random resized crop + flip (True) or resize + centre crop (False).
        resize_size: eval only: shorter side before the centre crop (default image_size).
        scale: train only: range of the crop's area as a fraction of the frame.
        hflip: train only: flip horizontally with probability 0.5. Turn off for data where
            left/right matters (e.g. questions about directions).
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        train: bool = False,
        *,
        resize_size: int | None = None,
        scale: tuple[float, float] = (0.5, 1.0),
        hflip: bool = True,
    ) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError(f"mean and std need 3 values (RGB), got {mean!r} and {std!r}")
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.train = train
        if train:
            steps: list[v2.Transform] = [v2.RandomResizedCrop(self.image_size, scale=scale, antialias=True)]
            if hflip:
                steps.append(v2.RandomHorizontalFlip())
        else:
            steps = [v2.Resize(resize_size or self.image_size, antialias=True),
                     v2.CenterCrop(self.image_size)]
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        self.transform = v2.Compose(steps)

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        """Transform one clip.

        Args:
            clip: uint8 (T, H, W, 3) frames as ``read_clip`` returns them, or one image
                (H, W, 3), treated as T = 1.

        Returns:
            float32 (3, T, image_size, image_size), normalised.
        """
        if clip.dim() == 3:
            clip = clip[None]
        if clip.dim() != 4 or clip.shape[-1] != 3:
            raise ConfigError(f"expected uint8 frames (T, H, W, 3), got {tuple(clip.shape)}")
        if clip.dtype != torch.uint8:
            raise ConfigError(f"expected uint8 frames, got {clip.dtype} (pass read_clip's output)")
        frames = self.transform(clip.permute(0, 3, 1, 2))  # (T, C, h, w), float
        return frames.permute(1, 0, 2, 3).contiguous()

    def __repr__(self) -> str:
        return (f"ClipTransform(image_size={self.image_size}, mean={self.mean}, std={self.std}, "
                f"train={self.train})")


def build_clip_transform(
    image_size: int,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    train: bool = False,
    **kwargs: object,
) -> ClipTransform:
    """A ``ClipTransform``: uint8 (T, H, W, 3) -> float32 (3, T, image_size, image_size).

    ``kwargs`` go to ``ClipTransform`` (``resize_size``, ``scale``, ``hflip``).
    """
    return ClipTransform(image_size, mean, std, train, **kwargs)  # type: ignore[arg-type]
