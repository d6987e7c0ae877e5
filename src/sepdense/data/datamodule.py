"""CIFAR-10 as a LightningDataModule: whole splits in memory as uint8 tensors, augmented a batch at a time."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from sepdense.data.augment import CIFAR10_MEAN, CIFAR10_STD, cutout, normalize, random_crop_flip
from sepdense.data.loader import InMemoryLoader, ShardedEpochSampler, stream_seed
from sepdense.data.sources import ImageFolder, OfficialCIFAR10, SplitArrays, Synthetic
from sepdense.errors import ConfigError, DataError

Source = OfficialCIFAR10 | ImageFolder | Synthetic


def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val) with each class's share of ``val_size`` proportional to its size.

    Shares are rounded by largest remainder so they add up to ``val_size`` exactly; within a class
    the held-out images are a seeded random choice, so the split is the same on every run and rank.
    """
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * val_size / len(labels)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: val_size - quota.sum()]] += 1
    val = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota, strict=True)]
    val_idx = np.sort(np.concatenate(val))
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


class CIFAR10DataModule(pl.LightningDataModule):
    """Train / validation (held out of the training set) / test (the official test set) for 32×32 images.

    ``setup`` keeps each split as one uint8 tensor; the loaders move it to the training device
    once and slice batches from it; ``on_after_batch_transfer`` crops, flips, normalises (and
    optionally cuts out) the whole batch there. No worker processes are needed.
    """

    def __init__(
        self,
        source: Source,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        val_size: int = 5000,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        crop_padding: int = 4,
        horizontal_flip: bool = True,
        cutout: int = 0,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        self.source = source
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.split_seed, self.shuffle_seed = val_size, split_seed, shuffle_seed
        self.crop_padding, self.horizontal_flip, self.cutout = crop_padding, horizontal_flip, cutout
        self.mean, self.std = tuple(mean), tuple(std)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self.source_index: dict[str, Tensor] = {}
        # Which images a test was run on: saved with each run's test predictions, so that only runs
        # tested on the same images with the same labels are paired (see split_fingerprint).
        self.test_data: dict[str, str] = {}
        # Augmentation draws from its own generator, saved in checkpoints (state_dict), so a resumed
        # run augments exactly as an uninterrupted one would.
        self.generator: torch.Generator | None = None
        self._saved_generator_state: Tensor | None = None
        # The training loader's place in its epoch, saved in checkpoints so a mid-epoch resume continues there.
        self._train_loader: InMemoryLoader | None = None
        self._train_position: dict[str, int] | None = None
        for key in ("batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key}={getattr(self, key)} must be a positive integer.")
        if val_size < 0:
            raise ConfigError(f"data.val_size={val_size} must be 0 or more.")

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.source.class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        arrays = self.source.load()
        _check_arrays(arrays, self.num_classes)
        num_train = len(arrays.train_labels)
        if self.val_size >= num_train:
            raise ConfigError(
                f"data.val_size={self.val_size} leaves no training images: the training set has {num_train}. "
                f"Use a smaller data.val_size."
            )
        train_idx, val_idx = stratified_split(arrays.train_labels, self.val_size, self.split_seed)
        # Evaluation runs in a fixed, seeded, class-mixed order whatever order the source stores its files
        # in (an image folder is sorted by class), so a shortened evaluation (limit_val/test_batches) is a
        # fair sample of every class. The full split still counts each image once.
        rng = np.random.default_rng(self.split_seed)
        test_idx = rng.permutation(len(arrays.test_labels))
        val_idx = rng.permutation(val_idx)
        sources = {"train": (arrays.train_images, arrays.train_labels, train_idx),
                   "val": (arrays.train_images, arrays.train_labels, val_idx),
                   "test": (arrays.test_images, arrays.test_labels, test_idx)}  # fmt: skip
        self.splits = {
            split: (torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]))
            for split, (images, labels, idx) in sources.items()
        }
        # Position of each image in the source's own split (train and val: its training set).
        self.source_index = {split: torch.from_numpy(idx) for split, (_, _, idx) in sources.items()}
        self.test_data = {
            "data_source": describe_source(self.source),
            "test_fingerprint": split_fingerprint(arrays.test_images, arrays.test_labels),
        }
        if len(train_idx) < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the training split ({len(train_idx)} images), "
                f"so an epoch would have no batch. Use a smaller data.batch_size."
            )

    def _loader(self, split: str, train: bool) -> InMemoryLoader:
        if split not in self.splits:
            self.setup()
        images, labels = self.splits[split]
        if len(labels) == 0:
            raise ConfigError(f"The {split} split is empty; set data.val_size > 0 to validate.")
        device, rank, world_size = torch.device("cpu"), 0, 1
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
        sampler = ShardedEpochSampler(len(labels), train, self.shuffle_seed, rank, world_size, pad=train)
        batch_size = self.batch_size if train else self.eval_batch_size
        index = self.source_index[split].to(device)
        return InMemoryLoader(images.to(device), labels.to(device), batch_size, sampler, drop_last=train, index=index)

    def train_dataloader(self) -> InMemoryLoader:
        self._train_loader = self._loader("train", train=True)
        if self._train_position is not None:
            self._train_loader.continue_from(self._train_position)
            self._train_position = None
        return self._train_loader

    def val_dataloader(self) -> InMemoryLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> InMemoryLoader:
        return self._loader("test", train=False)

    def _generator_on(self, device: torch.device) -> torch.Generator:
        if self.generator is None or self.generator.device != device:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            self.generator = torch.Generator(device).manual_seed(stream_seed(self.shuffle_seed, "augment", rank))
            if self._saved_generator_state is not None:
                self.generator.set_state(self._saved_generator_state)
                self._saved_generator_state = None
        return self.generator

    def augment(self, images: Tensor) -> Tensor:
        """Training-time augmentation of a uint8 batch, returned normalised (float32)."""
        generator = self._generator_on(images.device)
        images = random_crop_flip(images, self.crop_padding, self.horizontal_flip, generator)
        return cutout(normalize(images, self.mean, self.std), self.cutout, generator)

    def state_dict(self) -> dict[str, Any]:
        state = {} if self.generator is None else {"augment_generator": self.generator.get_state()}
        if self._train_loader is not None:
            state["train_position"] = self._train_loader.position()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores the data module before it asks for the training loader, which takes the position.
        self._saved_generator_state = state_dict.get("augment_generator")
        self.generator = None
        self._train_position = state_dict.get("train_position")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, *rest = batch
        training = self.trainer is not None and self.trainer.training
        images = self.augment(images) if training else normalize(images, self.mean, self.std)
        return images, *rest


def describe_source(source: Source) -> str:
    """The source's kind and settings, e.g. ``ImageFolder(root=data/cifar10-jpeg, image_size=32, ...)``."""
    settings = [f"{k}={v}" for k, v in vars(source).items()
                if not k.startswith("_") and isinstance(v, str | int | float | bool | Path)]  # fmt: skip
    return f"{type(source).__name__}({', '.join(settings)})"


def split_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """sha1 of a split's images and labels in the source's order: equal only for the same images, labels and order."""
    digest = hashlib.sha1(f"{images.shape}|{images.dtype}|{labels.dtype}".encode())
    digest.update(np.ascontiguousarray(images).data)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return digest.hexdigest()


def _check_arrays(arrays: SplitArrays, num_classes: int) -> None:
    """Fail loudly on data that would otherwise train silently on garbage."""
    for split in ("train", "test"):
        images, labels = getattr(arrays, f"{split}_images"), getattr(arrays, f"{split}_labels")
        if len(labels) == 0:
            raise DataError(f"The {split} split has no images. Check the data source's {split} folder or files.")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise DataError(f"The {split} images are {images.dtype} {images.shape}, not uint8 (N, 3, H, W).")
        if len(images) != len(labels):
            raise DataError(f"The {split} split has {len(images)} images but {len(labels)} labels.")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise DataError(
                f"The {split} labels run from {labels.min()} to {labels.max()}, outside 0..{num_classes - 1} "
                f"for {num_classes} classes."
            )
