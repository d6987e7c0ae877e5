"""A run or sweep directory handed to the report (or to export and evaluate) decides nothing about where files
are written: names are checked, and no write follows a symbolic link out of its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_report import DONE
from test_significance import fake_run

from sepdense.deployment import read_deployed, record_deployed
from sepdense.report import write_report
from sepdense.runs import CONFIG_FILE
from sepdense.tables import UnsafePathError, safe_name


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_crafted_sweep_writes_nothing_outside_its_report_folder(tmp_path: Path) -> None:
    # As found: report/summary.json a link to a file elsewhere, and a run whose model.conv climbs out of the folder.
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "a" / "b").mkdir(parents=True)
    target = elsewhere / "precious.json"
    target.write_text("keep me")
    sweep = tmp_path / "a" / "b" / "sweep"
    for conv in ("standard", "separable"):
        fake_run(sweep / conv, conv, 0, 12, 0.8, 3e8, 10.0, extra=DONE)
    crafted = sweep / "crafted"
    fake_run(crafted, "standard", 1, 12, 0.8, 3e8, 10.0, extra=DONE)
    config = OmegaConf.load(crafted / CONFIG_FILE)
    config.model.conv = "../../../../elsewhere/x"
    OmegaConf.save(config, crafted / CONFIG_FILE)
    (sweep / "report").mkdir()
    (sweep / "report" / "summary.json").symlink_to(target)
    (sweep / "report" / "curves").symlink_to(elsewhere, target_is_directory=True)
    before = files_under(elsewhere)

    out = write_report(sweep)

    assert files_under(elsewhere) == before  # nothing written, overwritten or added there
    assert not list(tmp_path.glob("**/x.png")) and not list(tmp_path.glob("**/confusion_*x*.png"))
    summary_file = out / "summary.json"
    assert not summary_file.is_symlink() and not (out / "curves").is_symlink()  # the links replaced, not followed
    summary = json.loads(summary_file.read_text())
    status = {row["run"]: row["status"] for row in summary["runs"]}
    assert status["crafted"].startswith("broken (model.conv='../../../../elsewhere/x' is not a registered conv type")
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
    assert (out / "curves_by_conv.png").is_file() and (out / "report.md").is_file()


def test_a_report_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = tmp_path / "run"
    fake_run(run, "standard", 0, 12, 0.8, 3e8, 10.0, extra=DONE)
    (run / "report").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        write_report(run)
    assert list(elsewhere.iterdir()) == []


def test_record_deployed_writes_into_the_run_directory_only(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / "deployed.json").symlink_to(target)
    record_deployed(run, "int8", {"test/acc": 0.8})
    assert target.read_text() == "keep me"
    assert not (run / "deployed.json").is_symlink() and read_deployed(run) == {"int8": {"test/acc": 0.8}}
    with pytest.raises(ValueError, match="not one of fp32, int8"):
        record_deployed(run, "../x", {})


def test_names_made_from_text_stay_in_their_folder() -> None:
    assert safe_name("model.conv=separable,seed=0") == "model.conv=separable,seed=0"
    for text in ("../../x", "a/b", "..", "x" * 300):
        name = safe_name(text)
        assert "/" not in name and not name.startswith(".") and len(name) <= 80
    assert safe_name("a/b") != safe_name("a_b")  # a name that had to change keeps a hash of the original
