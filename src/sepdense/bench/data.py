"""Data level: images/s delivered to the training step by the in-memory data module vs the usual
per-image torchvision pipeline (PIL transforms in DataLoader workers), over the same images."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from sepdense.bench.model import train_timings
from sepdense.data import CIFAR10DataModule

# The layout training uses by default (module.channels_last=true).
TRAIN_SETTING = {"precision": "fp32", "channels_last": True, "compile": False}


class PerImageCIFAR10(Dataset):
    """What ``torchvision.datasets.CIFAR10`` does per item: uint8 HWC array -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # torchvision keeps HWC
        self.labels, self.transform = labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def torchvision_loader(datamodule: CIFAR10DataModule, workers: int) -> DataLoader:
    from torchvision import transforms

    images, labels = datamodule.splits["train"]
    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=datamodule.crop_padding),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(datamodule.mean, datamodule.std),
        ]
    )
    dataset = PerImageCIFAR10(images.numpy(), labels.numpy(), transform)
    # persistent workers: the baseline's best case, no worker start-up between epochs.
    return DataLoader(
        dataset,
        batch_size=datamodule.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )


def endless(make_iter: Callable[[], Iterator]) -> Iterator:
    while True:
        yield from make_iter()


def images_per_second(batches: Iterator, prepare: Callable[[tuple], tuple], warmup: int, measured: int) -> dict:
    """Time ``measured`` batches (after ``warmup``) from the iterator to a batch ready for the model."""
    for _ in range(warmup):
        prepare(next(batches))
    count, start = 0, time.perf_counter()
    for _ in range(measured):
        images, _ = prepare(next(batches))
        count += len(images)
    seconds = time.perf_counter() - start
    return {"images_per_s": count / seconds, "ms_per_batch": 1000 * seconds / measured, "batches": measured}


def benchmark_data(
    datamodule: CIFAR10DataModule, net: nn.Module, warmup: int, batches: int, workers: int, step_runs: int
) -> tuple[list[dict], dict]:
    """Both pipelines side by side in one process; returns their rows and a summary with the ratios."""
    datamodule.setup()
    module_loader = datamodule.train_dataloader()
    with torch.no_grad():
        ours = images_per_second(
            endless(lambda: iter(module_loader)), lambda b: (datamodule.augment(b[0]), b[1]), warmup, batches
        )
        baseline_loader = torchvision_loader(datamodule, workers)
        baseline = images_per_second(endless(lambda: iter(baseline_loader)), lambda b: b, warmup, batches)
    step_ms = train_timings(net, TRAIN_SETTING, "cpu", datamodule.batch_size, runs=step_runs)["train_step_ms"]
    rows = [
        {"pipeline": "CIFAR10DataModule (in memory, batch-wise augmentation)", **ours},
        {"pipeline": f"torchvision per-image transforms, DataLoader({workers} workers)", **baseline},
    ]
    summary = {
        "speedup": ours["images_per_s"] / baseline["images_per_s"],
        "train_step_ms": step_ms,
        "data_share_of_step": ours["ms_per_batch"] / step_ms,
        "batch_size": datamodule.batch_size,
        "model": f"{type(net).__name__} ({getattr(net, 'conv_type', '?')})",
    }
    return rows, summary
