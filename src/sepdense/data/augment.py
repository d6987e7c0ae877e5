"""Batch-wise augmentation and normalisation on the training device (no per-image PIL work).

Each function takes a whole batch of images (B, C, H, W) and draws one random choice per
image from ``generator`` (or torch's global RNG), so a batch of 512 costs a few kernel calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Per-channel mean and std of the CIFAR-10 training images, on the 0-1 scale.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def random_crop(images: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad by ``padding`` on each side, then cut one random H×W window per image."""
    if padding <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (b,), device=images.device, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b,), device=images.device, generator=generator)
    rows = (top[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (B, H, 1)
    cols = (left[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indexing on (batch, row, col) gathers every window at once: (B, H, W, C).
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_horizontal_flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


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


def normalize(images: Tensor, mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD) -> Tensor:
    """uint8 0-255 images to float32, standardised per channel."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * 255
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1) * 255
    return (images.float() - mean_t) / std_t
