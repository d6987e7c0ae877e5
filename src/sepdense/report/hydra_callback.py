"""The Hydra callback that writes a report after every single run and after every multirun."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sepdense.report.build import write_report
from sepdense.report.headline import run_summary
from sepdense.runs import REPORT_DIR, failed_runs, stopped_runs, unstarted_jobs
from sepdense.stopping import (
    INVOCATION_ENV,
    TIME_LIMIT_EXIT,
    continue_command,
    pass_signals_to_workers,
    share_start_with_workers,
    signals_received,
)
from sepdense.tracking import log_report


class ReportCallback(Callback):
    """Writes ``report/`` into the run directory after a run, into every job and the sweep directory after a sweep."""

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(Path(config.hydra.run.dir), config.get("logger"))

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        # Jobs of a multirun each get their own report too (a single run is reported by on_run_end).
        if config.hydra.mode is not None and str(config.hydra.mode).endswith("MULTIRUN"):
            self._write(Path(config.hydra.runtime.output_dir), config.get("logger"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        share_start_with_workers()  # a parallel sweep's jobs count the time limit from this command's start
        if str(config.hydra.launcher.get("_target_", "")).endswith(".JoblibLauncher"):
            pass_signals_to_workers()  # Ctrl-C or SIGTERM: the workers' jobs save their steps, and the sweep ends

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(INVOCATION_ENV, None)  # the workers are gone; a later command from this process is its own
        signalled = signals_received()
        root = Path(config.hydra.sweep.dir)
        if self._write(root):
            print(sweep_summary(root))
        # Failed jobs were recorded and the sweep went on; its exit status says that some failed.
        failed = failed_runs(root)
        if failed:
            listed = "; ".join(f"{name}: {reason}" for name, reason in failed)
            print(f"error: {len(failed)} job(s) of the sweep failed ({listed}); the others ran. A resume=true of the "
                  f"same command runs them again, except those whose loss diverged (add retry_failed=true).",
                  file=sys.stderr)  # fmt: skip
        # A parallel sweep's jobs that the time limit or a signal stopped returned (each saved its step); here it
        # ends the command.
        if signalled:
            what, code = f"Stopped by {signalled}", 128 + signal.Signals[signalled].value
        elif config.get("time_limit") and stopped_runs(root, by=("time_limit",)):
            what, code = f"Time limit time_limit={config.time_limit} reached", TIME_LIMIT_EXIT
        elif stopped_runs(root, by=("signal",), unrecorded=False):  # a signal sent to a worker, not the command
            what, code = "Stopped by a signal", 1
        else:
            what, code = None, 0
        unfinished = [*stopped_runs(root), *(unstarted_jobs(root) or [])] if what else []
        if unfinished:
            print(f"error: {what}: {len(unfinished)} run(s) not finished ({', '.join(unfinished)}); those that were "
                  f"running saved where they stopped. Continue with: {continue_command(sweep=True)}",
                  file=sys.stderr)  # fmt: skip
            raise SystemExit(code)
        if failed:
            raise SystemExit(1)

    @staticmethod
    def _write(root: Path, loggers: DictConfig | None = None) -> bool:
        """Write the report of ``root``; whether it was written."""
        if int(os.environ.get("LOCAL_RANK", "0")) > 0:  # DDP child processes re-run the script: one report
            return False
        if not root.is_dir():  # a run that failed before saving anything removes its directory
            return False
        try:
            print(f"[sepdense] report: {write_report(root) / 'report.md'}")
            log_report(root, loggers)  # a run tracked in MLflow gets its report as artifacts too
            return True
        except Exception as err:  # the runs themselves are saved; a report problem must not look like a failed run
            print(f"[sepdense] could not write the report for {root} ({type(err).__name__}: {err}); "
                  f"run `python -m sepdense.report {root}` to retry.")  # fmt: skip
            return False


def sweep_summary(root: Path) -> str:
    """What a sweep prints when it ends: each run's test accuracy and macro F1 (or how far it got), and where
    the sweep and its report are; read from the report's summary.json."""
    summary = json.loads((root / REPORT_DIR / "summary.json").read_text())
    runs = summary["runs"]
    return (f"\n[sepdense] sweep: {summary['completion']}\n{run_summary(runs)}"
            f"sweep directory: {root}\nreport: {root / REPORT_DIR / 'report.md'}")  # fmt: skip
