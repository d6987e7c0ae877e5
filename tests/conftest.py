"""Shared fixtures: tiny datasets written in each supported on-disk layout, and the composed Hydra config."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SHARED_CIFAR10_JPEG = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def random_images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def write_official_batches(root: Path, per_batch: int = 20, test: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Five training batches and a test batch in the official pickle layout; returns all training images/labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images, labels = [], []
    for i, (name, n) in enumerate([(f"data_batch_{j}", per_batch) for j in range(1, 6)] + [("test_batch", test)]):
        batch_images = random_images(n, seed=10 + i)
        batch_labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": batch_images.reshape(n, -1), b"labels": batch_labels}, f)
        if name != "test_batch":
            images.append(batch_images)
            labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def write_image_folder(root: Path, class_names: list[str], per_class: int = 4, size: int = 32) -> None:
    """root/{train,test}/<class>/<i>.png, lossless, each image filled with a class-specific pattern."""
    for split in ("train", "test"):
        for label, name in enumerate(class_names):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = random_images(1, seed=label * 100 + i + (split == "test") * 50, size=size)[0]
                Image.fromarray(pixels.transpose(1, 2, 0)).save(folder / f"{i:04d}.png")


@pytest.fixture
def compose_train_cfg(tmp_path: Path):
    """Compose the real training config with overrides, pointed at a temporary run directory."""

    def _compose(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.data_dir = str(tmp_path / "data")
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


# A run of seconds through the whole pipeline (random data, tiny network, CPU), without a progress bar.
SMOKE = ["debug=smoke", "callbacks.progress_bar=null"]


def run_entry(
    script: str, *args: str, log_dir: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``train.py``, ``benchmark.py`` or ``-m <module>`` as a user would, logging under ``log_dir``."""
    cmd = [sys.executable, script, *args, f"paths.log_dir={log_dir}"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, **env} if env else None)  # fmt: skip
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One smoke run of the default conv type through train.py (shared: tests only read it)."""
    log_dir = tmp_path_factory.mktemp("smoke_run")
    result = run_entry("train.py", *SMOKE, log_dir=log_dir)
    (run_dir,) = (log_dir / "train" / "runs").iterdir()
    return run_dir, result


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two conv types × two seeds of smoke runs, a real multirun (shared: tests only read it)."""
    log_dir = tmp_path_factory.mktemp("smoke_sweep")
    run_entry("train.py", "-m", *SMOKE, "model.conv=separable,standard", "seed=0,1", log_dir=log_dir)
    (sweep_dir,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep_dir


def entry_config(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """The config an entry point gets from ``@hydra.main``, for calling it in this process (no torch import again)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg
