"""Batch-wise augmentation and normalisation on the training device (no per-image PIL work).

Each function takes a whole batch of images (B, C, H, W) and draws one random choice per
image from ``generator`` (or torch's global RNG), so a batch of 512 costs a few kernel calls.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

# Per-channel mean and std of the CIFAR-10 training images, on the 0-1 scale.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def random_crop_flip(
    images: Tensor, padding: int, flip: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Zero-pad by ``padding``, cut one random H×W window per image and (if ``flip``) mirror it with p=1/2.

    Crop and flip are one ``gather`` over the flattened padded images: each output pixel reads
    its source pixel directly, which is several times faster than cropping and flipping in turn.
    """
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding)).view(b, c, -1)
    top = torch.randint(0, 2 * padding + 1, (b, 1), device=device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b, 1), device=device, generator=generator)
    cols = torch.arange(w, device=device).expand(b, w)
    if flip:
        mirror = torch.rand(b, 1, device=device, generator=generator) < 0.5
        cols = torch.where(mirror, cols.flip(1), cols)
    rows = torch.arange(h, device=device) + top  # (B, H)
    source = (rows[:, :, None] * (w + 2 * padding) + (cols + left)[:, None, :]).view(b, 1, h * w)
    return padded.gather(2, source.expand(b, c, h * w)).view(b, c, h, w)


def cutout(images: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero one size×size square per image, centred anywhere (so it may be clipped by the border).

    Applied after normalisation, zero is the dataset mean, as in DeVries & Taylor (2017).
    """
    if size <= 0:
        return images
    b, _, h, w = images.shape
    cy = torch.randint(0, h, (b, 1, 1), device=images.device, generator=generator)
    cx = torch.randint(0, w, (b, 1, 1), device=images.device, generator=generator)
    top, left = cy - size // 2, cx - size // 2
    ys = torch.arange(h, device=images.device)[None, :, None]
    xs = torch.arange(w, device=images.device)[None, None, :]
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return images.masked_fill(inside[:, None], 0.0)


@functools.lru_cache(maxsize=8)
def _scale_shift(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    # Built once per device: normalize runs on every batch, and a fresh tensor would be a host-to-device copy each time.
    scale = torch.tensor([1 / (255 * s) for s in std], device=device).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=device).view(1, -1, 1, 1)
    return scale, shift


def normalize(images: Tensor, mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD) -> Tensor:
    """uint8 0-255 images to float32, standardised per channel: x·(1/255σ) − μ/σ in one pass."""
    scale, shift = _scale_shift(tuple(mean), tuple(std), images.device)
    return images.float().mul_(scale).add_(shift)
