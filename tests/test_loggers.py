"""Each tracker (CSV, MLflow, W&B offline, TensorBoard's HPARAMS) holds the run: read back with its own client."""

from __future__ import annotations

import csv
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import CONF_DIR, SMOKE
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from sepdense.errors import ConfigError
from sepdense.tracking import TRACKERS_FILE, build_loggers, log_report, write_hparams
from sepdense.train import train

# Every tracker but TensorBoard (tests/test_train.py reads that one), on the smallest network, two steps an epoch.
TRACKERS = ("logger=[csv,mlflow,wandb]", "model.block_config=[1,1,1,1]", "model.growth_rate=4",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")  # fmt: skip


def compose_cfg(run_dir: Path, *overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*SMOKE, *overrides])
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.data_dir = str(run_dir.parent / "data")
    return cfg


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A smoke run to every tracker, stopped after its first epoch (untested, as a crash leaves it), then resumed."""
    run_dir = tmp_path_factory.mktemp("trackers") / "run"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)  # the local store, never a server
        env.setenv("WANDB_SILENT", "true")
        first = train(compose_cfg(run_dir, *TRACKERS, "trainer.max_epochs=1", "test=false"))
        ids = json.loads((run_dir / TRACKERS_FILE).read_text())
        # A row the interrupted run wrote after its checkpoint: trained again, so the resume must drop it.
        metrics_csv = run_dir / "csv" / "metrics.csv"
        header = next(csv.reader(metrics_csv.open()))
        with metrics_csv.open("a", newline="") as file:
            csv.DictWriter(file, fieldnames=header).writerow({"step": 99, "val/acc": 0.99})
        final = train(compose_cfg(run_dir, *TRACKERS, "trainer.max_epochs=2", "resume=true"))
    return {"run_dir": run_dir, "first": first, "final": final, "ids": ids,
            "trackers": json.loads((run_dir / TRACKERS_FILE).read_text())}  # fmt: skip


def test_the_csv_file_holds_every_epoch_and_the_summary(resumed_run: dict[str, Any]) -> None:
    run_dir, first, final = resumed_run["run_dir"], resumed_run["first"], resumed_run["final"]
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    val_acc = [float(r["val/acc"]) for r in rows if r["val/acc"]]
    # The first process's epoch survives the resume, the second's follows, the row after the checkpoint is gone.
    assert val_acc == [pytest.approx(first["val/acc"]), pytest.approx(final["val/acc"])]
    assert max(int(r["step"]) for r in rows) < 99
    assert [float(r["test/acc"]) for r in rows if r["test/acc"]] == [pytest.approx(final["test/acc"])]
    assert {"train/loss", "val/f1", "time/train_images_per_s", "train/lr/pg1"} <= set(rows[0])
    (summary,) = csv.DictReader((run_dir / "csv" / "summary.csv").open())
    assert list(summary)[:2] == ["model.conv", "seed"]
    assert summary["model.conv"] == "separable" and summary["seed"] == "0"
    assert float(summary["model.params"]) == final["model/params"]
    assert float(summary["test/acc"]) == pytest.approx(final["test/acc"])


def test_a_resumed_mlflow_run_is_one_run_with_everything(resumed_run: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    run_dir, first, final = resumed_run["run_dir"], resumed_run["first"], resumed_run["final"]
    saved = resumed_run["trackers"]["mlflow"]
    assert saved == resumed_run["ids"]["mlflow"]  # the resume kept the run it started with
    assert saved["tracking_uri"] == f"sqlite:///{run_dir.resolve() / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(saved["tracking_uri"])
    experiment = client.get_experiment_by_name("sepdense")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == saved["run_id"] and run.info.status == "FINISHED"
    assert run.info.run_name == "run"  # the run directory's name
    params = run.data.params
    assert params["model.conv"] == "separable" and params["seed"] == "0"
    assert params["model.block_config"] == "[1, 1, 1, 1]" and params["data.batch_size"] == "64"
    assert params["trainer.max_epochs"] == "1"  # MLflow keeps a parameter's first value
    metrics = run.data.metrics
    for key in ("test/acc", "test/f1", "val/acc", "train/loss", "model/params", "model/macs", "time/fit_s",
                "val/acc_best"):  # fmt: skip
        assert metrics[key] == pytest.approx(final[key]), key
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [
        pytest.approx(first["val/acc"]),
        pytest.approx(final["val/acc"]),
    ]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "confusion_matrix.json", "test_predictions.npz", "environment.json"} <= artifacts
    saved_metrics = Path(client.download_artifacts(run.info.run_id, "metrics.json", str(run_dir.parent)))
    assert json.loads(saved_metrics.read_text()) == json.loads((run_dir / "metrics.json").read_text())
    # The confusion matrix after each of the two validation epochs, and the test one.
    assert len(client.list_artifacts(run.info.run_id, "val/confusion_matrix")) == 2
    assert len(client.list_artifacts(run.info.run_id, "test/confusion_matrix")) == 1
    (run_dir / "report").mkdir()
    (run_dir / "report" / "report.md").write_text("# report\n")
    log_report(run_dir, compose_cfg(run_dir, *TRACKERS).logger)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "report")] == ["report/report.md"]


def wandb_records(path: Path) -> list[Any]:
    """The records of a W&B run file (a LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs)."""
    from wandb.proto import wandb_internal_pb2

    data, block, position, records, pending = path.read_bytes(), 32768, 7, [], b""  # after the ":W&B" header
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a chunk header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or a record's last chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_a_resumed_wandb_run_keeps_its_id_config_curves_and_summary(resumed_run: dict[str, Any]) -> None:
    run_dir, first, final = resumed_run["run_dir"], resumed_run["first"], resumed_run["final"]
    run_id = resumed_run["ids"]["wandb"]["id"]
    assert resumed_run["trackers"]["wandb"]["id"] == run_id
    files = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2  # one offline file per process, both for the same run id: `wandb sync` joins them
    config, val_acc, summary, images = {}, [], {}, []
    for path in files:
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                assert record.run.run_id == run_id and record.run.project == "sepdense"
                config |= {item.key: json.loads(item.value_json) for item in record.run.config.update}
            elif kind == "config":
                config |= {item.key: json.loads(item.value_json) for item in record.config.update}
            elif kind == "history":
                items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
                val_acc += [items["val/acc"]] if "val/acc" in items else []
                images += [path.parent / "files" / f for f in items.get("val/confusion_matrix/filenames", [])]
            elif kind == "summary":
                summary |= {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.summary.update}
    assert config["model.conv"] == "separable" and config["seed"] == 0
    assert config["model.block_config"] == "[1, 1, 1, 1]"
    assert val_acc == [pytest.approx(first["val/acc"]), pytest.approx(final["val/acc"])]
    for key in ("test/acc", "test/f1", "val/acc", "model/params", "time/fit_s"):
        assert summary[key] == pytest.approx(final[key]), key
    assert len(images) == 2 and all(image.is_file() and image.suffix == ".png" for image in images)


def test_a_missing_tracker_library_is_named_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: find_spec and import both fail
    cfg = compose_cfg(tmp_path / "run", "logger=[tensorboard,mlflow]")
    with pytest.raises(ConfigError, match=r"pip install 'sepdense\[mlflow\]'") as err:
        build_loggers(cfg, None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing was created, not even the TensorBoard logger's folder


def test_hparams_put_conv_type_and_seed_first_as_tensorboard_reads_them(tmp_path: Path) -> None:
    # The `differs` flag is set in TensorBoard's own protobuf (no public API sets it): read back by TensorBoard.
    values = {"model.conv": "standard", "seed": 3, "data.batch_size": 64, "optimizer.lr": 0.1, "model.params": 10.0}
    write_hparams(tmp_path, values, {"test/acc": 0.5, "val/acc": 0.25})
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {h.name: h.differs for h in experiment.hparam_infos} == {
        "model.conv": True,
        "seed": True,
        "data.batch_size": False,
        "optimizer.lr": False,
        "model.params": False,
    }
    assert {m.name.tag for m in experiment.metric_infos} == {"test/acc", "val/acc"}
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model.conv"].string_value == "standard" and start.hparams["seed"].string_value == "3"
    # TensorBoard prints numbers to 5 digits (seed 3 as 3.0000): settings that are integers go as text.
    assert start.hparams["data.batch_size"].string_value == "64" and start.hparams["model.params"].number_value == 10
