"""Where the images come from: the official CIFAR-10 batches, an image folder, or generated synthetic data.

Every source returns the same thing, ``SplitArrays``: uint8 images (N, 3, H, W) and int64 labels
for the official train and test splits, so the data module never branches on the source.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sepdense.checkpoints import UnsafeFileError, load_plain_pickle
from sepdense.errors import DataError

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
WHERE_IMAGES = "Give data.source.root=<a folder with train/<class>/ and test/<class>/, or a .tar.gz of one>."
OFFICIAL_FOLDER = "cifar-10-batches-py"
OFFICIAL_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
OFFICIAL_TEST_FILES = ("test_batch",)


@dataclass
class SplitArrays:
    """The official train and test splits as uint8 (N, C, H, W) images and int64 labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


class OfficialCIFAR10:
    """The official ``cifar-10-python`` batches, downloaded through torchvision when missing."""

    name = "cifar10"

    def __init__(self, root: str, download: bool = True, class_names: Sequence[str] = CIFAR10_CLASSES) -> None:
        self.root = Path(root)
        self.download = download
        self.class_names = tuple(class_names)

    @property
    def folder(self) -> Path:
        return self.root / OFFICIAL_FOLDER

    def prepare(self) -> None:
        """Download and extract the archive if the batches are not there yet (runs once, on one process)."""
        if all((self.folder / f).is_file() for f in OFFICIAL_TRAIN_FILES + OFFICIAL_TEST_FILES):
            return
        if not self.download:
            raise DataError(
                f"The CIFAR-10 batches are not in {self.folder}. Set data.source.download=true, or put "
                f"cifar-10-python.tar.gz into {self.root} and extract it there."
            )
        from torchvision.datasets import CIFAR10

        try:
            CIFAR10(str(self.root), train=True, download=True)
        except Exception as err:  # urllib, ssl and socket errors all mean "no way to get the archive"
            raise DataError(
                f"Could not download CIFAR-10 into {self.root} ({type(err).__name__}: {err}). Without internet, "
                f"put cifar-10-python.tar.gz (from https://www.cs.toronto.edu/~kriz/cifar.html) into {self.root}, "
                f"or train from a local image folder: python train.py data=imagefolder data.source.root=<dir with "
                f"train/<class>/ and test/<class>/>."
            ) from err

    def load(self) -> SplitArrays:
        train_images, train_labels = _read_official_batches(self.folder, OFFICIAL_TRAIN_FILES)
        test_images, test_labels = _read_official_batches(self.folder, OFFICIAL_TEST_FILES)
        return SplitArrays(train_images, train_labels, test_images, test_labels)


def _read_official_batches(folder: Path, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read pickled batches in the official layout: {b'data': uint8 (N, 3072), b'labels': [N ints]}."""
    images, labels = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing. Delete {folder} and run again to re-download CIFAR-10.")
        try:
            batch = load_plain_pickle(path)  # arrays, lists and bytes only: a crafted batch cannot run code
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            batch_labels = np.asarray(batch.get(b"labels", batch.get(b"fine_labels")), dtype=np.int64)
        except UnsafeFileError:
            raise
        except Exception as err:
            raise DataError(
                f"{path} is not a readable CIFAR-10 batch ({type(err).__name__}: {err}). "
                f"Delete {folder} and run again to re-download it."
            ) from err
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch_labels) != len(data):
            raise DataError(
                f"{path} has data of shape {data.shape} and {len(batch_labels)} labels, not (N, 3072) and N. "
                f"Delete {folder} and run again to re-download it."
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


class ImageFolder:
    """``root/{train,test}/<class>/*.{png,jpg,jpeg}``, decoded once and cached as uint8 arrays.

    ``root`` is a folder, or a ``.tar`` / ``.tar.gz`` / ``.tgz`` archive of one (read in place,
    nothing extracted; the layout may sit under one top folder inside it). Class indices follow
    ``class_names`` (not the alphabetical order of the folders), so the labels mean the same as in
    the official data. The cache is keyed by the file list, sizes and modification times (for an
    archive: its own size and time): editing, adding or removing an image rebuilds it.
    """

    name = "imagefolder"

    def __init__(
        self,
        root: str,
        cache_dir: str | None = None,
        class_names: Sequence[str] = CIFAR10_CLASSES,
        image_size: int = 32,
    ) -> None:
        self.root = Path(root)
        self.is_archive = self.root.name.lower().endswith(ARCHIVE_SUFFIXES)
        default_cache = (self.root.parent if self.is_archive else self.root) / ".sepdense-cache"
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache
        self.class_names = tuple(class_names)
        self.image_size = image_size
        self._contents: dict[str, bytes] | None = None

    def prepare(self) -> None:
        """Decode and cache both splits if no valid cache exists (runs once, on one process)."""
        self.load()

    def load(self) -> SplitArrays:
        try:
            train_images, train_labels = self._load_split("train")
            test_images, test_labels = self._load_split("test")
        finally:
            self._contents = None  # an archive's bytes are kept only while both splits decode
        return SplitArrays(train_images, train_labels, test_images, test_labels)

    def _archive_contents(self) -> dict[str, bytes]:
        """Every image of the archive by layout path (split/class/file), read in one pass."""
        if self._contents is None:
            self._contents = _read_archive(self.root)
        return self._contents

    def _classes(self, split: str) -> dict[str, list[str]] | None:
        """Class folder → image paths (split/class/file) of one split, as stored; None if the split is absent."""
        if self.is_archive:
            classes: dict[str, list[str]] = {}
            for name in self._archive_contents():
                image_split, class_name, _ = name.split("/")
                if image_split == split:
                    classes.setdefault(class_name, []).append(name)
            return classes or None
        split_dir = self.root / split
        if not split_dir.is_dir():
            return None
        return {
            d.name: [f"{split}/{d.name}/{p.name}" for p in d.iterdir() if _is_image_name(p.name) and p.is_file()]
            for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")
        }  # fmt: skip

    def _list_files(self, split: str) -> list[tuple[str, int]]:
        """(relative image path, label) for one split, class by class in ``class_names`` order."""
        if not self.is_archive and not self.root.exists():
            raise DataError(f"{self.root} does not exist. {WHERE_IMAGES}")
        classes = self._classes(split)
        where = f"{self.root}:{split}" if self.is_archive else str(self.root / split)
        if classes is None:
            raise DataError(
                f"{where} does not exist. An image folder needs train/<class>/ and test/<class>/ "
                f"(classes: {', '.join(self.class_names)})."
            )
        found = sorted(classes)
        missing = [c for c in self.class_names if c not in found]
        unknown = [c for c in found if c not in self.class_names]
        if missing or unknown:
            raise DataError(
                f"{where} has class folders {found}, but data.source.class_names is {list(self.class_names)}"
                + (f" (missing: {missing})" if missing else "")
                + (f" (not a listed class: {unknown})" if unknown else "")
                + ". Make the folders match the class list."
            )
        files = []
        for label, class_name in enumerate(self.class_names):
            if not classes[class_name]:
                raise DataError(
                    f"{where}/{class_name} holds no images ({'/'.join(IMAGE_EXTENSIONS)}). "
                    f"Every class needs at least one."
                )
            files.extend((name, label) for name in sorted(classes[class_name]))
        return files

    def _cache_path(self, split: str, files: list[tuple[str, int]] | None) -> Path:
        """Keyed by every file's size and time, or for an archive (``files`` None) by the archive's."""
        digest = hashlib.sha1(f"{self.root.resolve()}|{self.class_names}|{self.image_size}".encode())
        if self.is_archive:
            if not self.root.is_file():
                raise DataError(f"{self.root} does not exist. {WHERE_IMAGES}")
            stat = self.root.stat()
            digest.update(f"{split}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        for name, label in files or []:
            entry = f"{name}|{label}"
            if not self.is_archive:
                stat = (self.root / name).stat()
                entry += f"|{stat.st_size}|{stat.st_mtime_ns}"
            digest.update(f"{entry}\n".encode())
        return self.cache_dir / f"{split}-{digest.hexdigest()[:16]}.npz"

    def _load_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        files = None if self.is_archive else self._list_files(split)  # an archive is only read on a cache miss
        cache = self._cache_path(split, files)
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as arrays:
                    return arrays["images"], arrays["labels"]
            except Exception:  # a half-written or damaged cache is rebuilt, never trusted
                cache.unlink(missing_ok=True)
        if self.is_archive:
            files = self._list_files(split)
            contents = self._archive_contents()
            images = np.stack([self._decode(f"{self.root}:{name}", contents[name]) for name, _ in files])
        else:
            images = np.stack([self._decode(str(self.root / name), self.root / name) for name, _ in files])
        labels = np.array([label for _, label in files], dtype=np.int64)
        self._write_cache(cache, images, labels)
        return images, labels

    def _decode(self, name: str, source: Path | bytes) -> np.ndarray:
        """One image, from a file or from bytes read out of an archive; ``name`` is what errors show."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                image.load()
                size, mode = image.size, image.mode
                array = np.asarray(image)
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise DataError(f"{name} is not a readable image ({err}). Replace or delete it.") from err
        if mode != "RGB":
            raise DataError(f"{name} is a {mode} image; every image must be RGB. Convert or delete it.")
        if size != (self.image_size, self.image_size):
            raise DataError(
                f"{name} is {size[0]}×{size[1]} pixels; every image must be {self.image_size}×{self.image_size} "
                f"(data.source.image_size). Resize or delete it."
            )
        return array.transpose(2, 0, 1)

    def _write_cache(self, cache: Path, images: np.ndarray, labels: np.ndarray) -> None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
            np.savez(tmp, images=images, labels=labels)
            os.replace(tmp, cache)  # atomic: a reader never sees a half-written cache
        except OSError as err:
            # A read-only data folder still trains; it just decodes again next time.
            print(f"[sepdense] could not write the image cache {cache} ({err}); set data.source.cache_dir to cache.")


def _open_archive(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise DataError(f"{path} does not exist. {WHERE_IMAGES}")
    try:
        return tarfile.open(path)
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"{path} is not a readable tar archive ({err}). Download or copy it again.") from err


def _layout_parts(member_name: str) -> tuple[str, ...] | None:
    """(split, class, file) of an image member, at the archive's top or under one top folder."""
    parts = tuple(p for p in member_name.split("/") if p not in ("", "."))
    if len(parts) == 4:  # <top>/<split>/<class>/<file>
        parts = parts[1:]
    if len(parts) != 3 or parts[0] not in ("train", "test") or parts[1].startswith("."):
        return None
    return parts if _is_image_name(parts[2]) else None


def _is_image_name(name: str) -> bool:
    # Hidden files are not images even with an image suffix: macOS writes ._<name>.jpg beside each file.
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _read_archive(path: Path) -> dict[str, bytes]:
    """Layout path (split/class/file) → bytes of every image in a tar archive, in one sequential pass."""
    contents = {}
    with _open_archive(path) as archive:
        try:
            for member in archive:
                parts = _layout_parts(member.name) if member.isfile() else None
                if parts:
                    contents["/".join(parts)] = archive.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"{path} is a damaged tar archive ({err}). Download or copy it again.") from err
    return contents


class Synthetic:
    """Generated images that a network can learn: exercises the whole pipeline without any files.

    Each class has its own mean colour (drawn from ``seed``); an image is its class's colour shifted
    by a random per-image colour cast (std ``image_shift``) plus pixel noise (uniform in ±``pixel_noise``), so
    classes overlap and a small network learns some of them in a few steps, but not all of them.
    """

    name = "synthetic"

    def __init__(
        self,
        num_train: int = 2048,
        num_test: int = 512,
        num_classes: int = 10,
        image_size: int = 32,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
        image_shift: float = 20.0,
        pixel_noise: int = 80,
    ) -> None:
        self.num_train, self.num_test, self.image_size, self.seed = num_train, num_test, image_size, seed
        self.class_names = tuple(class_names) if class_names else tuple(f"class{i}" for i in range(num_classes))
        self.image_shift, self.pixel_noise = image_shift, pixel_noise

    def prepare(self) -> None:
        """Nothing to download or decode."""

    def load(self) -> SplitArrays:
        rng = np.random.default_rng(self.seed)
        colours = rng.uniform(64, 192, (len(self.class_names), 3, 1, 1))
        train_images, train_labels = self._draw(rng, colours, self.num_train)
        test_images, test_labels = self._draw(rng, colours, self.num_test)
        return SplitArrays(train_images, train_labels, test_images, test_labels)

    def _draw(self, rng: np.random.Generator, colours: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, len(colours), n, dtype=np.int64)
        shift = rng.normal(0, self.image_shift, (n, 3, 1, 1))
        images = np.empty((n, 3, self.image_size, self.image_size), dtype=np.uint8)
        for start in range(0, n, 4096):  # in chunks: the noise of 50,000 images at once would be 300 MB
            part = slice(start, start + 4096)
            noise = rng.integers(-self.pixel_noise, self.pixel_noise, (len(images[part]), *images.shape[1:]),
                                 dtype=np.int16, endpoint=True)  # fmt: skip
            images[part] = np.clip(np.rint(colours[labels[part]] + shift[part]).astype(np.int16) + noise, 0, 255)
        return images, labels
