"""CIFAR-10 data: sources, in-memory loaders and batch-wise augmentation."""

from sepdense.data.augment import CIFAR10_MEAN, CIFAR10_STD
from sepdense.data.datamodule import CIFAR10DataModule
from sepdense.data.sources import CIFAR10_CLASSES, ImageFolder, OfficialCIFAR10, Synthetic

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10DataModule",
    "ImageFolder",
    "OfficialCIFAR10",
    "Synthetic",
]
