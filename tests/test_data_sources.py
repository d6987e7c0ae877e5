"""Reading the official batches and image folders, the image-folder cache, and every bad-input error."""

from __future__ import annotations

import json
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_CIFAR10_JPEG, run_entry, write_image_folder, write_official_batches
from PIL import Image

from sepdense.data import CIFAR10_CLASSES, CIFAR10DataModule, ImageFolder, OfficialCIFAR10
from sepdense.errors import ConfigError, DataError


def test_official_batches_are_read_in_order(tmp_path: Path) -> None:
    images, labels = write_official_batches(tmp_path, per_batch=20, test=30)
    arrays = OfficialCIFAR10(str(tmp_path), download=False).load()
    assert arrays.train_images.shape == (100, 3, 32, 32) and arrays.train_images.dtype == np.uint8
    assert arrays.test_images.shape == (30, 3, 32, 32)
    np.testing.assert_array_equal(arrays.train_images, images)
    np.testing.assert_array_equal(arrays.train_labels, labels)


def test_official_prepare_is_a_no_op_when_batches_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_official_batches(tmp_path)
    monkeypatch.setattr("torchvision.datasets.CIFAR10", lambda *a, **k: pytest.fail("must not download"))
    OfficialCIFAR10(str(tmp_path)).prepare()


def test_offline_download_says_where_to_put_the_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", no_network)
    with pytest.raises(DataError, match="Could not download CIFAR-10") as info:
        OfficialCIFAR10(str(tmp_path)).prepare()
    assert "cifar-10-python.tar.gz" in str(info.value) and "data=imagefolder" in str(info.value)


def test_missing_batches_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not in .*cifar-10-batches-py"):
        OfficialCIFAR10(str(tmp_path), download=False).prepare()


def test_corrupt_batch_is_named(tmp_path: Path) -> None:
    write_official_batches(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3 is not a readable CIFAR-10 batch"):
        OfficialCIFAR10(str(tmp_path), download=False).load()


def test_image_folder_uses_the_fixed_class_order(tmp_path: Path) -> None:
    classes = ["zebra", "apple", "mango"]  # deliberately not alphabetical
    write_image_folder(tmp_path, classes, per_class=3)
    arrays = ImageFolder(str(tmp_path), cache_dir=str(tmp_path / "cache"), class_names=classes).load()
    assert arrays.train_images.shape == (9, 3, 32, 32) and arrays.test_images.shape == (9, 3, 32, 32)
    np.testing.assert_array_equal(arrays.train_labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    expected = np.asarray(Image.open(tmp_path / "train" / "apple" / "0001.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(arrays.train_images[4], expected)  # apple (label 1), second file


def test_image_folder_cache_is_used_then_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    classes = ["a", "b"]
    write_image_folder(tmp_path / "images", classes, per_class=2)
    source = ImageFolder(str(tmp_path / "images"), cache_dir=str(tmp_path / "cache"), class_names=classes)
    first = source.load()
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2

    monkeypatch.setattr(ImageFolder, "_decode", lambda self, name, _: pytest.fail(f"decoded {name} despite the cache"))
    second = source.load()
    np.testing.assert_array_equal(first.train_images, second.train_images)
    monkeypatch.undo()

    changed = tmp_path / "images" / "train" / "b" / "0000.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(changed)
    third = source.load()
    assert (third.train_images[2] == np.array([255, 0, 0])[:, None, None]).all()


def _bad_folder(tmp_path: Path) -> Path:
    write_image_folder(tmp_path, ["a", "b"], per_class=2)
    return tmp_path


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda root: (root / "test").rename(root / "elsewhere"), r"test does not exist"),
        (lambda root: (root / "train" / "b").rename(root / "train" / "c"), r"missing: \['b'\].*not a listed class"),
        (lambda root: [p.unlink() for p in (root / "train" / "a").iterdir()], r"train/a holds no images"),
        (lambda root: Image.new("RGB", (28, 32)).save(root / "train" / "a" / "9.png"), r"9.png is 28×32 pixels"),
        (lambda root: Image.new("L", (32, 32)).save(root / "train" / "b" / "8.png"), r"8.png is a L image"),
        (lambda root: (root / "test" / "a" / "7.jpg").write_bytes(b"\xff\xd8junk"), r"7.jpg is not a readable image"),
    ],
    ids=["missing-split", "missing-class", "empty-class", "wrong-size", "wrong-mode", "corrupt-file"],
)
def test_image_folder_bad_input_is_named(tmp_path: Path, breakage, message: str) -> None:
    root = _bad_folder(tmp_path)
    breakage(root)
    with pytest.raises(DataError, match=message):
        ImageFolder(str(root), cache_dir=str(tmp_path / "cache"), class_names=["a", "b"]).load()


def _archive(folder: Path, archive: Path, top: str | None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(folder / split, arcname=f"{top}/{split}" if top else split)
    return archive


@pytest.mark.parametrize("top", [None, "cifar10-jpeg"], ids=["layout-at-top", "under-one-folder"])
def test_an_archive_reads_as_the_folder_it_holds(tmp_path: Path, top: str | None, monkeypatch) -> None:
    classes = ["zebra", "apple", "mango"]
    write_image_folder(tmp_path / "images", classes, per_class=3)
    (tmp_path / "images" / "train" / "apple" / "._0000.png").write_bytes(b"\x00\x05\x16\x07")  # macOS metadata
    archive = _archive(tmp_path / "images", tmp_path / "images.tar.gz", top)
    from_folder = ImageFolder(str(tmp_path / "images"), cache_dir=str(tmp_path / "c1"), class_names=classes).load()
    source = ImageFolder(str(archive), cache_dir=str(tmp_path / "c2"), class_names=classes)
    from_archive = source.load()
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(from_archive, field), getattr(from_folder, field), err_msg=field)
    monkeypatch.setattr(ImageFolder, "_decode", lambda self, name, _: pytest.fail(f"decoded {name} despite the cache"))
    np.testing.assert_array_equal(source.load().test_images, from_folder.test_images)


def test_a_bad_archive_is_named(tmp_path: Path) -> None:
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match=r"junk.tar.gz is not a readable tar archive"):
        ImageFolder(str(tmp_path / "junk.tar.gz"), cache_dir=str(tmp_path / "cache")).load()
    with pytest.raises(DataError, match=r"absent.tgz does not exist"):
        ImageFolder(str(tmp_path / "absent.tgz"), cache_dir=str(tmp_path / "cache")).load()
    write_image_folder(tmp_path / "images", ["a", "b"], per_class=1)
    archive = _archive(tmp_path / "images", tmp_path / "two.tar", None)
    with pytest.raises(DataError, match=r"two.tar:train has class folders \['a', 'b'\].*missing: \['c'\]"):
        ImageFolder(str(archive), cache_dir=str(tmp_path / "cache"), class_names=["a", "b", "c"]).load()


def test_split_size_errors(tmp_path: Path) -> None:
    write_image_folder(tmp_path, ["a", "b"], per_class=4)
    source = ImageFolder(str(tmp_path), cache_dir=str(tmp_path / "cache"), class_names=["a", "b"])
    with pytest.raises(ConfigError, match=r"data.val_size=8 leaves no training images: the training set has 8"):
        CIFAR10DataModule(source, val_size=8).setup()
    with pytest.raises(ConfigError, match=r"data.batch_size=16 is larger than the training split \(6 images\)"):
        CIFAR10DataModule(source, val_size=2, batch_size=16).setup()
    with pytest.raises(ConfigError, match="The val split is empty"):
        dm = CIFAR10DataModule(source, val_size=0, batch_size=2)
        dm.setup()
        dm.val_dataloader()


@pytest.mark.skipif(not SHARED_CIFAR10_JPEG.is_file(), reason="the local CIFAR-10 JPEG copy (../shared/data) is absent")
def test_local_cifar10_copy_has_every_image(tmp_path: Path) -> None:
    # Read from the archive in place, as a user may (data.source.root=<...>.tar.gz): nothing extracted.
    arrays = ImageFolder(str(SHARED_CIFAR10_JPEG), cache_dir=str(tmp_path / "cache")).load()
    assert arrays.train_images.shape == (50_000, 3, 32, 32) and arrays.test_images.shape == (10_000, 3, 32, 32)
    assert np.bincount(arrays.train_labels).tolist() == [5000] * len(CIFAR10_CLASSES)
    assert np.bincount(arrays.test_labels).tolist() == [1000] * len(CIFAR10_CLASSES)
    # The normalisation constants must describe this data (JPEG changes them only in the third decimal).
    from sepdense.data import CIFAR10_MEAN, CIFAR10_STD

    # Exact per-channel mean and std from each channel's histogram of the 256 pixel values.
    values = np.arange(256) / 255
    counts = np.stack([np.bincount(arrays.train_images[:, c].ravel(), minlength=256) for c in range(3)])
    mean = counts @ values / counts.sum(1)
    std = np.sqrt(counts @ values**2 / counts.sum(1) - mean**2)
    np.testing.assert_allclose(mean, CIFAR10_MEAN, atol=0.01)
    np.testing.assert_allclose(std, CIFAR10_STD, atol=0.01)


def test_evaluation_order_mixes_the_classes_of_a_class_sorted_folder(tmp_path: Path) -> None:
    classes = [f"c{i}" for i in range(10)]
    write_image_folder(tmp_path, classes, per_class=6)  # stored class by class, as image folders are
    source = ImageFolder(str(tmp_path), cache_dir=str(tmp_path / "cache"), class_names=classes)
    datamodule = CIFAR10DataModule(source, val_size=20, batch_size=4, eval_batch_size=10)
    datamodule.setup()
    arrays = source.load()
    for split, labels_in_source in (("test", arrays.test_labels), ("val", arrays.train_labels)):
        batches = list(getattr(datamodule, f"{split}_dataloader")())
        assert len(set(batches[0][1].tolist())) >= 5, split  # a shortened evaluation samples many classes
        index = torch.cat([b[2] for b in batches])
        assert len(set(index.tolist())) == len(index)  # the whole split still counts each image once
        np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), labels_in_source[index.numpy()])
    again = CIFAR10DataModule(source, val_size=20, batch_size=4, eval_batch_size=10)
    again.setup()
    assert torch.equal(again.source_index["test"], datamodule.source_index["test"])  # fixed by the seed


@pytest.mark.slow
def test_a_shortened_test_on_a_class_sorted_folder_reports_absent_classes_as_absent(tmp_path: Path) -> None:
    classes = list(CIFAR10_CLASSES)
    write_image_folder(tmp_path / "images", classes, per_class=12)
    overrides = ["trainer=cpu", "model.block_config=[1,1,1,1]", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                 "callbacks.progress_bar=null", "data=imagefolder", f"data.source.root={tmp_path / 'images'}",
                 f"data.source.cache_dir={tmp_path / 'cache'}", "data.val_size=20", "data.batch_size=10",
                 "data.eval_batch_size=6", "trainer.limit_test_batches=1"]  # fmt: skip
    run_entry("train.py", *overrides, log_dir=tmp_path / "logs")
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    confusion = np.array(json.loads((run_dir / "confusion_matrix.json").read_text())["matrix"])
    assert confusion.sum() == 6
    present = [c for c, support in zip(classes, confusion.sum(1), strict=True) if support > 0]
    assert len(present) >= 3  # six images of a class-sorted folder, not six airplanes
    assert {k.split("/")[-1] for k in metrics if k.startswith("test/f1/")} == set(present)
