"""Files from elsewhere never run code, and faults (a broken checkpoint, a full disk) lose nothing already saved."""

from __future__ import annotations

import errno
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMOKE, run_entry, write_official_batches
from omegaconf import OmegaConf

from sepdense.checkpoints import UnsafeFileError, load_checkpoint
from sepdense.cli import find_user_error
from sepdense.data import OfficialCIFAR10
from sepdense.errors import DiskFullError
from sepdense.runs import CONFIG_FILE, PREDICTIONS_FILE, load_run
from sepdense.train import train


class _CreatesFile:
    """Unpickling this creates ``marker``: a stand-in for what a crafted file could do instead (run a command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return open, (str(self.marker), "w")


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "payload": _CreatesFile(marker)}, path)
    return path


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


@pytest.mark.slow
def test_a_crafted_checkpoint_is_refused_by_each_entry_point(tmp_path: Path, smoke_run: tuple) -> None:
    marker = tmp_path / "code-ran"
    crafted = crafted_checkpoint(tmp_path / "shared.ckpt", marker)
    # Training from it, and evaluating it: one line naming the file, and nothing ran.
    commands = [("train.py", *SMOKE, f"ckpt_path={crafted}"), ("-m", "sepdense.evaluate", f"ckpt_path={crafted}"),
                ("-m", "sepdense.export", f"ckpt_path={crafted}")]  # fmt: skip
    for command in commands:
        result = run_entry(*command, log_dir=tmp_path / "logs", check=False)
        assert result.returncode == 1
        line = one_error_line(result.stderr)
        assert str(crafted) in line and "could run code" in line and "nothing was loaded" in line
        assert not marker.exists()
    # Resuming a run directory whose last.ckpt was replaced.
    run_dir, _ = smoke_run
    copy = tmp_path / "copied-run"
    # a run in progress (no metrics.json) whose checkpoint was replaced
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.ckpt", "tensorboard", "report", "metrics.json"))
    crafted_checkpoint(copy / "checkpoints" / "last.ckpt", marker)
    result = run_entry("train.py", *SMOKE, f"resume={copy}", log_dir=tmp_path / "logs", check=False)
    assert result.returncode == 1 and "could run code" in one_error_line(result.stderr)
    assert not marker.exists()
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["last.ckpt"]  # nothing was written


@pytest.mark.parametrize(
    "target",
    ["builtins.open", "sepdense.models.densenet.torch.serialization.load", "sepdense.models.DenseNetX"],
)
def test_a_checkpoint_naming_a_callable_is_refused(target: str, tmp_path: Path, smoke_run: tuple) -> None:
    """Plain values only, but a network _target_ that Hydra would call while rebuilding the model: any name but
    the network's own, also one that starts like it (Hydra walks a dotted name through attributes)."""
    run_dir, _ = smoke_run
    saved = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    saved["hyper_parameters"]["net"] = {"_target_": target, "f": str(tmp_path / "code-ran")}
    torch.save(saved, tmp_path / "hostile.ckpt")
    with pytest.raises(UnsafeFileError, match=r"hostile.ckpt holds a config \(hyper_parameters.net\) whose _target_"):
        load_checkpoint(tmp_path / "hostile.ckpt")
    assert load_checkpoint(run_dir / "checkpoints" / "best.ckpt")["state_dict"]  # our own checkpoints still load


def test_the_allowed_targets_name_the_real_classes() -> None:
    import hydra.utils

    from sepdense.checkpoints import DATA_TARGETS, NETWORK_TARGETS
    from sepdense.data import CIFAR10DataModule, ImageFolder, OfficialCIFAR10, Synthetic
    from sepdense.models import DenseNet

    for names, classes in ((NETWORK_TARGETS, {DenseNet}), (DATA_TARGETS, {CIFAR10DataModule, ImageFolder,
                                                                          OfficialCIFAR10, Synthetic})):  # fmt: skip
        assert {hydra.utils.get_class(name) for name in names} == classes
    for group in ("model", "data"):  # what the configs name is allowed
        for config in (Path(__file__).parents[1] / "conf" / group).glob("*.yaml"):
            for line in config.read_text().splitlines():
                if line.strip().startswith("_target_:"):
                    assert line.split(":", 1)[1].strip() in NETWORK_TARGETS | DATA_TARGETS, config


@pytest.mark.slow
def test_evaluate_refuses_a_run_whose_saved_config_names_a_callable(tmp_path: Path, smoke_run: tuple) -> None:
    run_dir, _ = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("tensorboard", "report"))
    config = OmegaConf.load(copy / CONFIG_FILE)
    config.data.source = {"_target_": "builtins.open", "file": str(tmp_path / "code-ran"), "mode": "w"}
    OmegaConf.save(config, copy / CONFIG_FILE)
    result = run_entry("-m", "sepdense.evaluate", f"ckpt_path={copy}", log_dir=tmp_path / "logs", check=False)
    assert result.returncode == 1 and "'builtins.open', a callable" in one_error_line(result.stderr)
    assert not (tmp_path / "code-ran").exists()


def test_crafted_data_files_are_refused_or_ignored(tmp_path: Path, smoke_run: tuple) -> None:
    marker = tmp_path / "code-ran"
    # A CIFAR-10 batch in the official pickle layout, with an object in place of the pixel array.
    write_official_batches(tmp_path / "cifar")
    batch = tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_1"
    import pickle

    batch.write_bytes(pickle.dumps({b"data": _CreatesFile(marker), b"labels": [0]}))
    with pytest.raises(UnsafeFileError, match=r"data_batch_1 holds an object of type io\.open that could run code"):
        OfficialCIFAR10(str(tmp_path / "cifar"), download=False).load()
    # A run's saved predictions with a pickled object array: the report lists the run as broken.
    run_dir, _ = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.ckpt", "tensorboard", "report"))
    np.savez(copy / PREDICTIONS_FILE, index=np.array([_CreatesFile(marker)], dtype=object))
    assert load_run(copy).status.startswith("broken")
    assert not marker.exists()


def _trained_run(compose_train_cfg, *overrides: str) -> tuple:
    cfg = compose_train_cfg(*SMOKE, *overrides)
    run_dir = Path(cfg.paths.output_dir)
    (run_dir / CONFIG_FILE).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / CONFIG_FILE)  # what Hydra writes: makes it a run directory to resume
    return cfg, run_dir


def test_a_broken_last_checkpoint_is_named_and_an_older_one_used(compose_train_cfg, caplog) -> None:
    cfg, run_dir = _trained_run(compose_train_cfg, "trainer.max_epochs=1", "test=false")
    train(cfg)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # a copy cut short, or a crash mid-write on another file system
    resumed = compose_train_cfg(*SMOKE, "trainer.max_epochs=2", "test=false", f"resume={run_dir}")
    with caplog.at_level(logging.WARNING):
        train(resumed)
    assert f"Skipping {last}: {last} is not a readable checkpoint (truncated or damaged" in caplog.text
    # best.ckpt (epoch 1) was used, and training went on from it to the end of epoch 2.
    assert load_checkpoint(last)["global_step"] == 2 * resumed.trainer.limit_train_batches

    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception) as info:
        train(compose_train_cfg(*SMOKE, "trainer.max_epochs=3", "test=false", f"resume={run_dir}"))
    message = str(find_user_error(info.value))
    assert message.startswith("None of the checkpoints in") and "cannot continue" in message


def test_a_full_disk_stops_the_run_and_keeps_the_earlier_checkpoints(compose_train_cfg, monkeypatch) -> None:
    cfg, run_dir = _trained_run(compose_train_cfg, "trainer.max_epochs=3", "test=false")
    real_save, calls = torch.save, []

    def save_until_full(obj: object, f: object, *args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) <= 2:  # epoch 1: best.ckpt and last.ckpt
            return real_save(obj, f, *args, **kwargs)
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device", getattr(f, "name", None))

    monkeypatch.setattr("sepdense.checkpoint_io.torch.save", save_until_full)
    with pytest.raises(Exception) as info:
        train(cfg)
    error = find_user_error(info.value)
    assert isinstance(error, DiskFullError)
    assert "is full" in str(error) and "checkpoints" in str(error) and "resume=true" in str(error)
    for name in ("best.ckpt", "last.ckpt"):  # epoch 1's, whole
        assert load_checkpoint(run_dir / "checkpoints" / name)["global_step"] == cfg.trainer.limit_train_batches
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")], "a temporary file was left"
