"""Training through the real entry point (single runs and a multirun), the logged metrics, and user errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import CONF_DIR, SMOKE, run_entry
from omegaconf import OmegaConf
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch import nn

from sepdense.callbacks import EpochProgressBar
from sepdense.cli import find_user_error
from sepdense.data import CIFAR10DataModule, Synthetic
from sepdense.data.augment import normalize
from sepdense.module import ImageClassifier, NonFiniteLossError
from sepdense.train import train


def scalar_tags(run_dir: Path) -> dict[str, list]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


@pytest.fixture(params=["single run, separable", "sweep job, standard"])
def run_dir(request: pytest.FixtureRequest) -> Path:
    if request.param.startswith("single"):
        return request.getfixturevalue("smoke_run")[0]
    return request.getfixturevalue("smoke_sweep") / "model.conv=standard,seed=0,callbacks.progress_bar=null,debug=smoke"


@pytest.mark.slow
def test_a_run_writes_every_output(run_dir: Path) -> None:
    conv = OmegaConf.load(run_dir / ".hydra" / "config.yaml").model.conv
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # The test figures are those of the per-image predictions saved beside them, recomputed here.
    with np.load(run_dir / "test_predictions.npz", allow_pickle=False) as saved:
        labels, preds, logits = saved["label"], saved["pred"], saved["logits"].astype(np.float32)
        assert str(saved["data_source"]).startswith("Synthetic(") and len(str(saved["test_fingerprint"])) == 40
    assert len(np.unique(preds)) >= 3  # the smoke data is learnable: the model does not predict one class
    assert 0 < metrics["test/acc"] < 1 and metrics["test/acc"] == pytest.approx(accuracy_score(labels, preds), abs=1e-6)
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert metrics[f"test/{name}"] == pytest.approx(fn(labels, preds, average="macro", zero_division=0), abs=1e-6)
    plain_ce = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item()
    assert metrics["test/loss"] == pytest.approx(plain_ce, abs=5e-3)  # logits are saved in float16
    for key in ("train/loss", "val/loss", "test/loss"):
        assert np.isfinite(metrics[key]) and metrics[key] > 0, key
    assert metrics["model/params"] > 0 and metrics["time/train_images_per_s"] > 0 and metrics["time/fit_s"] > 0
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    saved = (run_dir / ".hydra" / "config.yaml").read_text()
    assert f"conv: {conv}" in saved  # the full config is saved with the run
    environment = json.loads((run_dir / "environment.json").read_text())
    assert torch.__version__.startswith(environment["packages"]["torch"])
    assert "git_commit" in environment and "train.py" in environment["command"]
    assert (run_dir / "report" / "report.md").is_file()  # every run ends with its own report

    tags = scalar_tags(run_dir)
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "val/f1", "val/precision", "val/recall",
                "val/f1/class3", "test/acc", "test/recall/class9", "time/train_epoch_s", "time/val_epoch_s",
                "time/train_images_per_s", "time/step_ms", "memory/peak_mb", "train/loss_step"):  # fmt: skip
        assert tag in tags, tag
    # Constants are not curves: they go to metrics.json and HPARAMS, not to one-point SCALARS cards.
    assert not [t for t in tags if t.startswith(("hp/", "model/")) or t == "time/fit_s"]
    assert len(tags["val/acc"]) == 2  # one point per epoch
    assert metrics["val/acc_best"] == pytest.approx(max(e.value for e in tags["val/acc"]), abs=1e-6)
    # The step loss once per training step (2 epochs × 4 batches, logged at every step): no step twice.
    assert len({e.step for e in tags["train/loss_step"]}) == len(tags["train/loss_step"]) == 8
    assert tags["test/acc"][-1].value == pytest.approx(metrics["test/acc"])
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    # The HPARAMS tab: the conv type and seed first, the final metrics read from their curves.
    experiment = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    infos = {h.name: h for h in experiment.hparam_infos}
    # TensorBoard orders columns by `differs`, then by name: the conv type and seed come first.
    assert sorted(infos, key=lambda n: (not infos[n].differs, n))[:2] == ["model.conv", "seed"]
    assert {"model.params", "model.macs", "data.batch_size", "optimizer.lr", "data.source"} <= set(infos)
    assert {m.name.tag for m in experiment.metric_infos} == {
        "test/acc",
        "test/f1",
        "val/acc",
        "time/train_images_per_s",
    }
    # IMAGES: a validation confusion matrix after each epoch, drawn from that epoch, and the test one.
    val_steps = [e.step for e in events.Images("val/confusion_matrix")]
    assert len(val_steps) == 2 and [s - 1 for s in val_steps] == [e.step for e in tags["val/acc"]]
    assert len(events.Images("test/confusion_matrix")) == 1


@pytest.mark.slow
def test_a_run_leaves_a_readable_record(smoke_run: tuple) -> None:
    # On stderr and in train.log (stdout is not a terminal here): the estimate, then one line per epoch;
    # and none of the libraries' noise.
    run_dir, result = smoke_run
    log_text = (run_dir / "train.log").read_text()
    for text in (log_text, result.stderr):
        assert "Estimated training time:" in text
        assert re.search(r"epoch 1/2  train loss [\d.]+ acc [\d.]+%  val loss [\d.]+ acc [\d.]+%", text)
        assert "epoch 2/2" in text and "left ~" in text
    for noise in ("No CUDA runtime", "Tip:", "Total FLOPs", "LeafSpec", "Sanity Checking"):
        assert noise not in result.stderr + result.stdout, noise


def test_the_progress_bar_counts_epochs_like_the_log_lines() -> None:
    bar = EpochProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=100)  # the bar reads only max_epochs here
    assert bar._get_train_description(1).strip() == "Epoch 2/100"  # Lightning's own bar: "Epoch 1/99"
    assert len(bar._get_train_description(1)) >= len("Validation")  # padded as Lightning pads it


@pytest.mark.slow
def test_multirun_sweeps_both_conv_types_into_their_own_directories(smoke_sweep: Path) -> None:
    runs = sorted(p for p in smoke_sweep.iterdir() if p.is_dir() and (p / "metrics.json").exists())
    assert [r.name for r in runs] == [
        f"model.conv={conv},seed={seed},callbacks.progress_bar=null,debug=smoke"
        for conv in ("separable", "standard") for seed in (0, 1)
    ]  # fmt: skip
    params = {}
    for run in runs:
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
        assert (run / "report" / "report.md").is_file()  # each job's own report, beside the sweep's
        conv = OmegaConf.load(run / ".hydra" / "config.yaml").model.conv
        params[conv] = json.loads((run / "metrics.json").read_text())["model/params"]
    assert params["separable"] < params["standard"]


def test_logged_metrics_equal_scikit_learn(tmp_path: Path) -> None:
    """Macro and per-class precision/recall/F1 and accuracy as logged, against sklearn on the same predictions."""
    pl.seed_everything(0)
    datamodule = CIFAR10DataModule(Synthetic(num_train=600, num_test=300), val_size=100, batch_size=50,
                                   eval_batch_size=64)  # fmt: skip
    # A random linear classifier gives varied predictions, so every class is exercised.
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    module = ImageClassifier(net, [f"c{i}" for i in range(10)], optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
                             label_smoothing=0.3)  # fmt: skip
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=tmp_path)  # fmt: skip
    trainer.test(module, datamodule=datamodule, verbose=False)
    logged = trainer.callback_metrics

    images, labels = datamodule.splits["test"]
    with torch.no_grad():
        logits = net(normalize(images))
    # The test loss is plain cross-entropy, whatever label smoothing training uses.
    assert logged["test/loss"].item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert logged["test/loss"].item() != pytest.approx(F.cross_entropy(logits, labels, label_smoothing=0.3).item())
    preds = logits.argmax(1).numpy()
    labels = labels.numpy()
    assert len(np.unique(preds)) > 3
    assert logged["test/acc"].item() == pytest.approx(accuracy_score(labels, preds), abs=1e-6)
    for name, fn in (("precision", precision_score), ("recall", recall_score), ("f1", f1_score)):
        assert logged[f"test/{name}"].item() == pytest.approx(fn(labels, preds, average="macro", zero_division=0),
                                                              abs=1e-6)  # fmt: skip
        per_class = fn(labels, preds, average=None, labels=range(10), zero_division=0)
        for i in range(10):
            assert logged[f"test/{name}/c{i}"].item() == pytest.approx(per_class[i], abs=1e-6)
    assert module.confusion["test"].sum() == len(labels)


class DivergesInSecondEpoch(pl.Callback):
    """Turns the network's weights NaN at the start of the second epoch, after the first epoch's checkpoints."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            with torch.no_grad():
                next(pl_module.net.parameters()).fill_(float("nan"))


def test_non_finite_loss_stops_with_a_message_and_keeps_saved_checkpoints(tmp_path: Path) -> None:
    pl.seed_everything(0)
    datamodule = CIFAR10DataModule(Synthetic(num_train=160, num_test=32), val_size=32, batch_size=32)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    module = ImageClassifier(net, [f"c{i}" for i in range(10)], optimizer=lambda p: torch.optim.SGD(p, lr=0.01))
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", filename="best", monitor="val/acc",
                                               mode="max", save_last=True)  # fmt: skip
    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                         callbacks=[checkpoints, DivergesInSecondEpoch()], num_sanity_val_steps=0,
                         log_every_n_steps=2, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"The train loss became NaN or infinite at epoch 1, step 4") as info:
        trainer.fit(module, datamodule=datamodule)
    assert "Lower the learning rate" in str(info.value) and "checkpoints already saved are kept" in str(info.value)
    assert "32-true" not in str(info.value)  # this run is already in full precision
    # The first epoch's checkpoints are still there, load, and hold finite weights: none stored the NaN.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("best.ckpt", "last.ckpt"):
        saved = torch.load(tmp_path / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert saved["epoch"] == 0 and saved["global_step"] == 4
        assert all(torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point())
    restored = ImageClassifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), module.class_names)
    restored.load_state_dict(saved["state_dict"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.conv=depthwise", "error: model.conv='depthwise' is not a conv type; use one of: standard, separable"),
        ("model.no_such_key=1", "Key 'no_such_key' is not in struct"),
        ("+model.cnov=standard", "error: model.cnov (did you mean model.conv?) is not a setting of DenseNet"),
        ("trainer.max_epochs=-1", "error: trainer.max_epochs=-1 must be a whole number of at least 1"),
        (
            "experiment=comparison",
            "error: This config is a sweep (model.conv: standard,separable, seed: 0,1,2), "
            "which runs only with -m: python train.py -m",
        ),
    ],
)
@pytest.mark.slow
def test_user_errors_end_in_one_clear_line(override: str, message: str, tmp_path: Path) -> None:
    result = run_entry("train.py", *SMOKE, override, log_dir=tmp_path, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    if "no_such_key" not in override:  # Hydra's own message for an unknown key, with its advice, comes before ours
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "report" not in result.stdout  # a failed start writes no report
    runs = tmp_path / "train" / "runs"
    assert not runs.exists() or not list(runs.iterdir()), "a run that saved nothing leaves no directory behind"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.growth_rate=-4", "model.growth_rate=-4 must be a positive integer"),
        ("model.block_config=[]", "model.block_config=[] must list at least one block of ≥1 layers"),
        ("data.batch_size=5000", "data.batch_size=5000 is larger than the training split (768 images)"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 must be a whole number of at least 1"),
    ],
)
def test_config_mistakes_are_user_errors_that_name_the_key(override: str, message: str, compose_train_cfg) -> None:
    # The same path as above (the entry point prints the UserError's message), without a process per case.
    cfg = compose_train_cfg(*SMOKE, override)
    with pytest.raises(Exception) as info:
        train(cfg)
    error = find_user_error(info.value)
    assert error is not None and message in str(error)
    assert not Path(cfg.paths.output_dir).exists(), "a run that saved nothing leaves no directory behind"


def test_a_checkpoint_of_another_size_is_refused_naming_the_settings(smoke_run: tuple, compose_train_cfg) -> None:
    run_dir, _ = smoke_run
    cfg = compose_train_cfg(*SMOKE, "model.growth_rate=24", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}")
    with pytest.raises(Exception) as info:
        train(cfg)
    error = find_user_error(info.value)
    assert error is not None and "holds a network of another size (model.growth_rate is 12 there and 24 here; " in str(
        error
    )
    assert "\n" not in str(error) and "and " in str(error).split("more tensors")[0]
    assert not Path(cfg.paths.output_dir).exists(), "a run that saved nothing leaves no directory behind"


def test_a_failed_start_in_a_used_directory_removes_only_its_own_files(compose_train_cfg) -> None:
    cfg = compose_train_cfg(*SMOKE, "model.growth_rate=-4")
    output_dir = Path(cfg.paths.output_dir)  # as with hydra.run.dir=. : a directory that holds other work
    output_dir.mkdir(parents=True)
    (output_dir / "notes.txt").write_text("mine")
    with pytest.raises(Exception) as info:
        train(cfg)
    assert find_user_error(info.value) is not None
    assert sorted(p.name for p in output_dir.iterdir()) == ["notes.txt"]  # environment.json, written first, is gone


@pytest.mark.slow
def test_help_lists_the_training_groups_and_their_options(tmp_path: Path) -> None:
    result = run_entry("train.py", "--help", log_dir=tmp_path)
    groups = [p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("preset", "hydra", "paths")]
    for group in groups:
        for option in group.glob("[!_]*.yaml"):
            assert re.search(rf"^{group.name}: .*\b{option.stem}\b", result.stdout, re.M), f"{group.name}={option.stem}"
    assert "preset" not in result.stdout and "_common" not in result.stdout  # the benchmark's, and an internal file


@pytest.mark.parametrize("preset", ["trainer=cpu", "trainer=gpu", "trainer=debug", "callbacks=[default,early_stopping]",
                                    "optimizer=adamw", "scheduler=onecycle", "data=imagefolder",
                                    "experiment=densenet_bc100"])  # fmt: skip
def test_config_presets_compose_and_instantiate(preset: str, compose_train_cfg) -> None:
    cfg = compose_train_cfg(preset)
    for group in ("data", "model", "optimizer", "scheduler"):
        assert hydra.utils.instantiate(cfg[group], **({"num_classes": 10} if group == "model" else {}))
    for node in cfg.callbacks.values():
        assert hydra.utils.instantiate(node)
    if preset == "callbacks=[default,early_stopping]":
        assert cfg.callbacks.early_stopping.monitor == "val/loss"
