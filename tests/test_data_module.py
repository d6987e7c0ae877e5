"""Splits, in-memory loading, DDP sharding, batch-wise augmentation and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sepdense.data import CIFAR10_MEAN, CIFAR10_STD, CIFAR10DataModule, Synthetic
from sepdense.data.augment import cutout, normalize, random_crop_flip
from sepdense.data.datamodule import split_fingerprint, stratified_split
from sepdense.data.loader import InMemoryLoader, ShardedEpochSampler, stream_seed


def test_stratified_split_sizes_and_determinism() -> None:
    labels = np.repeat(np.arange(10), [600, 400] * 5)  # unbalanced classes
    train, val = stratified_split(labels, 500, seed=3)
    assert len(val) == 500 and len(train) == len(labels) - 500
    assert not set(train) & set(val) and set(train) | set(val) == set(range(len(labels)))
    assert np.bincount(labels[val]).tolist() == [60, 40] * 5  # each class in proportion
    again_train, again_val = stratified_split(labels, 500, seed=3)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(train, again_train)
    assert not np.array_equal(val, stratified_split(labels, 500, seed=4)[1])


def test_stratified_split_rounds_to_the_exact_size() -> None:
    labels = np.repeat(np.arange(3), [7, 7, 7])
    assert len(stratified_split(labels, 10, seed=0)[1]) == 10


def test_datamodule_splits_from_config_sizes() -> None:
    dm = CIFAR10DataModule(Synthetic(num_train=1000, num_test=300), val_size=100, batch_size=32)
    dm.setup()
    assert [len(dm.splits[s][1]) for s in ("train", "val", "test")] == [900, 100, 300]
    assert dm.splits["train"][0].dtype == torch.uint8 and dm.splits["train"][0].shape[1:] == (3, 32, 32)
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 900 // 32  # drop_last for training
    assert all(images.shape == (32, 3, 32, 32) for images, *_ in batches)
    val_seen = torch.cat([labels for _, labels, _ in dm.val_dataloader()])
    assert len(val_seen) == 100  # evaluation sees every image once


@pytest.mark.parametrize("num_samples", [100, 103])
@pytest.mark.parametrize("pad", [True, False])
def test_ddp_shards_are_disjoint_and_cover_the_epoch(num_samples: int, pad: bool) -> None:
    world = 4
    shards = []
    for rank in range(world):
        sampler = ShardedEpochSampler(num_samples, shuffle=True, seed=7, rank=rank, world_size=world, pad=pad)
        sampler.set_epoch(5)
        shards.append(sampler.indices().tolist())
        assert len(shards[-1]) == len(sampler)
    covered = [i for shard in shards for i in shard]
    assert set(covered) == set(range(num_samples))
    if pad:  # equal batches on every rank; at most world-1 repeats
        assert len({len(s) for s in shards}) == 1 and len(covered) - num_samples < world
    else:  # every image exactly once
        assert sorted(covered) == list(range(num_samples))


def test_epoch_order_is_reproducible_and_changes_between_epochs() -> None:
    sampler = ShardedEpochSampler(50, shuffle=True, seed=1)
    sampler.set_epoch(0)
    first = sampler.indices()
    sampler.set_epoch(1)
    second = sampler.indices()
    sampler.set_epoch(0)
    assert torch.equal(first, sampler.indices()) and not torch.equal(first, second)


def test_loader_batches_keep_images_and_labels_together() -> None:
    labels = torch.arange(40)
    images = labels.view(-1, 1, 1, 1).expand(-1, 3, 4, 4).to(torch.uint8)
    loader = InMemoryLoader(images, labels, 8, ShardedEpochSampler(40, shuffle=True, seed=0), drop_last=True)
    for batch_images, batch_labels, _ in loader:
        assert torch.equal(batch_images[:, 0, 0, 0].long(), batch_labels)


def _window_matches(out: torch.Tensor, images: torch.Tensor, padding: int) -> list[list[tuple[int, int, bool]]]:
    """For each output image, every (top, left, mirrored) with which it equals a window of its padded input."""
    padded = F.pad(images, (padding,) * 4)
    size, span = images.shape[-1], 2 * padding + 1
    return [
        [
            (y, x, m)
            for y in range(span)
            for x in range(span)
            for m in (False, True)
            if torch.equal(o, (p[:, y : y + size, x : x + size].flip(2) if m else p[:, y : y + size, x : x + size]))
        ]
        for o, p in zip(out, padded, strict=True)
    ]


def test_crops_are_windows_of_the_padded_image() -> None:
    images = torch.randint(1, 256, (32, 3, 32, 32), dtype=torch.uint8)
    matches = _window_matches(
        random_crop_flip(images, 4, flip=False, generator=torch.Generator().manual_seed(0)), images, 4
    )
    assert all(any(not m for _, _, m in found) for found in matches), "a crop is not a window of the padded image"
    assert len({found[0][:2] for found in matches}) > 10  # offsets really vary per image


def test_flip_is_the_mirror_of_the_original() -> None:
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(images, 0, flip=True, generator=torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, images, strict=True)])
    unchanged = torch.tensor([torch.equal(o, i) for o, i in zip(out, images, strict=True)])
    assert (mirrored | unchanged).all() and 10 < mirrored.sum() < 54


def test_crop_and_flip_together_give_mirrored_windows() -> None:
    images = torch.randint(1, 256, (32, 3, 32, 32), dtype=torch.uint8)
    matches = _window_matches(random_crop_flip(images, 4, generator=torch.Generator().manual_seed(1)), images, 4)
    assert all(matches)
    assert 5 < sum(found[0][2] for found in matches) < 27  # both mirrored and plain windows occur


def test_cutout_zeroes_one_square_per_image() -> None:
    images = torch.ones(64, 3, 32, 32)
    out = cutout(images, 8, torch.Generator().manual_seed(0))
    corners = set()
    for image in out:
        zero = image == 0
        assert torch.equal(zero[0], zero[1]) and torch.equal(zero[0], zero[2])  # every channel, the same pixels
        rows, cols = zero[0].any(1).nonzero().flatten(), zero[0].any(0).nonzero().flatten()
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert zero[0].sum() == (bottom - top) * (right - left)  # the zeroed pixels fill one rectangle
        assert (image[:, ~zero[0]] == 1).all()  # and nothing else changed
        # An 8×8 square centred on a pixel of the image: whole inside, clipped to at least 4 rows/columns at a border.
        for start, end in ((top, bottom), (left, right)):
            assert end - start == 8 or (4 <= end - start < 8 and (start == 0 or end == 32))
        corners.add((int(top), int(left)))
    assert len(corners) > 40  # the square moves from image to image


def test_normalisation_uses_the_cifar10_statistics() -> None:
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    at_mean = (mean * 255).round().to(torch.uint8).expand(2, 3, 8, 8)
    one_std_up = ((mean + std) * 255).round().to(torch.uint8).expand(2, 3, 8, 8)
    assert normalize(at_mean).abs().max() < 0.01
    assert (normalize(one_std_up) - 1).abs().max() < 0.02
    assert normalize(at_mean).dtype == torch.float32


def test_augmentation_never_moves_labels() -> None:
    dm = CIFAR10DataModule(Synthetic(num_train=64, num_test=16), val_size=0, batch_size=64, cutout=4)
    labels = torch.arange(64) % 10
    images = (labels * 20 + 10).view(-1, 1, 1, 1).expand(-1, 3, 32, 32).to(torch.uint8)  # each image "is" its label
    out = dm.augment(images)
    zero = normalize(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))
    for image, label in zip(out, labels, strict=True):
        own = normalize((label * 20 + 10).view(1, 1, 1, 1).expand(1, 3, 1, 1).to(torch.uint8))[0]
        pixel_is_own = torch.isclose(image, own).all(0)
        pixel_is_padding = torch.isclose(image, zero[0]).all(0) | (image == 0).all(0)  # zero pad or cutout
        assert (pixel_is_own | pixel_is_padding).all() and pixel_is_own.float().mean() > 0.5


def test_no_two_seeds_share_an_epoch_order() -> None:
    # With orders seeded by seed + epoch, seed 1's epoch 0 would be seed 0's epoch 1.
    orders = {}
    for seed in range(5):
        sampler = ShardedEpochSampler(1000, shuffle=True, seed=seed)
        for epoch in range(10):
            sampler.set_epoch(epoch)
            orders[(seed, epoch)] = tuple(sampler.indices().tolist())
    assert len(set(orders.values())) == len(orders) == 50
    streams = [
        stream_seed(seed, name, key) for seed in range(5) for name in ("data_order", "augment") for key in (0, 1)
    ]
    assert len(set(streams)) == len(streams)  # augmentation and data order draw from different streams too


def test_augmentation_streams_differ_between_seeds_and_resume_exactly() -> None:
    def augmented(dm: CIFAR10DataModule) -> torch.Tensor:
        return dm.augment(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator()))

    first, second = (CIFAR10DataModule(Synthetic(64, 16), val_size=0, shuffle_seed=s, cutout=8) for s in (0, 1))
    assert not torch.equal(augmented(first), augmented(second))
    state = first.state_dict()  # as a checkpoint saves it
    expected = augmented(first)
    resumed = CIFAR10DataModule(Synthetic(64, 16), val_size=0, shuffle_seed=0, cutout=8)
    resumed.load_state_dict(state)
    assert torch.equal(augmented(resumed), expected)


def test_the_test_fingerprint_changes_with_any_image_or_label() -> None:
    dm = CIFAR10DataModule(Synthetic(num_train=200, num_test=50), val_size=20, split_seed=1)
    dm.setup()
    arrays = Synthetic(num_train=200, num_test=50).load()
    fingerprint = dm.test_data["test_fingerprint"]
    assert fingerprint == split_fingerprint(arrays.test_images, arrays.test_labels)  # independent of split_seed
    assert dm.test_data["data_source"].startswith("Synthetic(num_train=200, num_test=50,")
    labels = arrays.test_labels.copy()
    labels[7] = (labels[7] + 1) % 10
    images = arrays.test_images.copy()
    images[3, 1, 5, 5] ^= 1
    assert split_fingerprint(arrays.test_images, labels) != fingerprint
    assert split_fingerprint(images, arrays.test_labels) != fingerprint


def test_synthetic_images_depend_on_their_class() -> None:
    data = Synthetic(num_train=1000, num_test=300, seed=3).load()
    colour = data.train_images.reshape(1000, 3, -1).mean(2)
    means = np.stack([colour[data.train_labels == c].mean(0) for c in range(10)])
    test_colour = data.test_images.reshape(300, 3, -1).mean(2)
    nearest = ((test_colour[:, None] - means[None]) ** 2).sum(2).argmin(1)
    assert 0.5 < (nearest == data.test_labels).mean() < 1  # learnable (chance: 0.1), but not trivially
    small = Synthetic(num_train=40, num_test=8, num_classes=5, image_size=16, seed=1).load()
    assert small.train_images.shape == (40, 3, 16, 16) and small.test_labels.max() < 5
    assert np.array_equal(small.test_images, Synthetic(40, 8, 5, 16, seed=1).load().test_images)  # seeded
