"""A checkpoint or run directory from elsewhere is data: it runs nothing through an interpolation, and never chooses
where anything is sent."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
import torch
from conftest import SMOKE, entry_config, run_entry
from omegaconf import DictConfig, OmegaConf

from sepdense.cli import find_user_error
from sepdense.runs import CONFIG_FILE
from sepdense.tracking import TRACKERS_FILE


def opens(marker: Path) -> str:
    """A config value that, resolved by OmegaConf, becomes a node Hydra would call ``open(marker, 'w')`` for."""
    return "${oc.create:'{_target_: builtins.open, file: " + str(marker) + ", mode: w}'}"


def refused(entry_point, cfg: DictConfig) -> str:
    with pytest.raises(Exception) as info:
        entry_point(cfg)
    error = find_user_error(info.value)
    assert error is not None, info.value
    return str(error)


def test_an_interpolation_in_a_checkpoint_runs_nothing(smoke_run: tuple, tmp_path: Path) -> None:
    from sepdense.evaluate import evaluate
    from sepdense.export import export

    marker = tmp_path / "code-ran"
    saved = torch.load(smoke_run[0] / "checkpoints" / "best.ckpt", weights_only=True)
    saved["hyper_parameters"]["net"]["stem_channels"] = opens(marker)  # plain strings: torch.load takes it
    hostile = tmp_path / "hostile.ckpt"
    torch.save(saved, hostile)
    for name, entry_point in (("evaluate", evaluate), ("export", export)):
        message = refused(entry_point, entry_config(name, [f"ckpt_path={hostile}"], tmp_path / name))
        assert message.startswith(f"{hostile} holds an interpolation in a config value (hyper_parameters.net.stem")
        assert "could run code" in message
        assert not marker.exists()
        assert not (tmp_path / name).exists()  # nothing written either


def test_a_run_config_that_reaches_a_callable_through_a_reference_runs_nothing(smoke_run: tuple,
                                                                                 tmp_path: Path) -> None:  # fmt: skip
    from sepdense.evaluate import evaluate

    marker = tmp_path / "code-ran"
    copy = tmp_path / "run"
    shutil.copytree(smoke_run[0], copy, ignore=shutil.ignore_patterns("tensorboard", "report"))
    config = OmegaConf.load(copy / CONFIG_FILE)
    # Only `data` is instantiated, but it stays linked to the rest of the file: a reference brings `evil` in.
    config.data.source.num_classes = "${evil}"
    config.evil = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}
    OmegaConf.save(config, copy / CONFIG_FILE)
    message = refused(evaluate, entry_config("evaluate", [f"ckpt_path={copy}"], tmp_path / "evaluation"))
    assert "(data.source.num_classes) whose _target_ is 'builtins.open', a callable" in message
    assert not marker.exists()
    # A resolver in the run's config is refused before anything is resolved.
    config.data.source.num_classes = opens(marker)
    OmegaConf.save(config, copy / CONFIG_FILE)
    message = refused(evaluate, entry_config("evaluate", [f"ckpt_path={copy}"], tmp_path / "evaluation"))
    assert "holds an interpolation in a config value (data.source.num_classes" in message
    assert not marker.exists()


def test_trackers_json_of_a_handed_run_sends_nothing(smoke_run: tuple, tmp_path: Path) -> None:
    """A run directory saying its MLflow run lives on a server: resumed (here: found complete, its report written
    again) with the default logger, nothing connects to that server."""
    copy = tmp_path / "run"
    shutil.copytree(smoke_run[0], copy, ignore=shutil.ignore_patterns("report"))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.5)
        planted = {"mlflow": {"run_id": "0" * 32, "tracking_uri": f"http://127.0.0.1:{listener.getsockname()[1]}"}}
        (copy / TRACKERS_FILE).write_text(json.dumps(planted))
        result = run_entry("train.py", *SMOKE, f"resume={copy}", log_dir=tmp_path / "logs")
        assert (copy / "report" / "report.md").is_file(), result.stdout[-2000:]
        with pytest.raises(TimeoutError):
            listener.accept()


def test_a_resume_that_would_change_the_run_is_refused_and_its_saved_config_kept(smoke_run: tuple,
                                                                                   tmp_path: Path) -> None:  # fmt: skip
    copy = tmp_path / "run"
    shutil.copytree(smoke_run[0], copy, ignore=shutil.ignore_patterns("report"))
    saved = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    # The run was trained with debug=smoke's settings and separable convs; this command asks for other ones.
    result = run_entry("train.py", "callbacks.progress_bar=null", "model.conv=standard", "optimizer.lr=0.05",
                       f"resume={copy}", log_dir=tmp_path / "logs", check=False)  # fmt: skip
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith(f"error: This command differs from the run it resumes ({copy / CONFIG_FILE}")
    assert "model.conv: separable -> standard" in lines[0] and "optimizer.lr: 0.1 -> 0.05" in lines[0]
    assert "; and " in lines[0] and " more." in lines[0]  # the defaults it left out (debug=smoke's) count as well
    # Nothing in the run directory changed (its config, overrides, metrics, checkpoints), and nothing was added.
    assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()} == saved


def test_a_failed_start_in_an_existing_folder_removes_only_what_it_made(tmp_path: Path) -> None:
    """``hydra.run.dir`` pointing at a folder of the user's, with ``checkpoints/`` and ``tensorboard/`` of their own:
    a mistake in the command (growth rate 0) stops the run, and every folder and file of theirs is still there."""
    folder = tmp_path / "mine"
    for name in ("checkpoints/notes.txt", "tensorboard/events.txt", "empty/.keep"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("the user's own\n")
    (folder / "empty" / ".keep").unlink()
    result = run_entry("train.py", *SMOKE, "model.growth_rate=0", f"hydra.run.dir={folder}", log_dir=tmp_path / "logs",
                       check=False)  # fmt: skip
    assert result.returncode == 1 and "growth_rate" in result.stderr
    for name in ("checkpoints/notes.txt", "tensorboard/events.txt"):
        assert (folder / name).read_text() == "the user's own\n"
    assert (folder / "empty").is_dir()
    assert not (folder / "environment.json").exists()  # what the run wrote is gone
    # A run directory Hydra made for the failed run goes entirely.
    result = run_entry("train.py", *SMOKE, "model.growth_rate=0", log_dir=tmp_path / "logs", check=False)
    assert result.returncode == 1 and not list((tmp_path / "logs" / "train" / "runs").iterdir())
