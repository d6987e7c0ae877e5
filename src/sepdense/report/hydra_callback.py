"""The Hydra callback that writes a report after every single run and after every multirun."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sepdense.report.build import write_report
from sepdense.tracking import log_report


class ReportCallback(Callback):
    """Writes ``report/`` into the run directory after a run, into every job and the sweep directory after a sweep."""

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(Path(config.hydra.run.dir))

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        # Jobs of a multirun each get their own report too (a single run is reported by on_run_end).
        if config.hydra.mode is not None and str(config.hydra.mode).endswith("MULTIRUN"):
            self._write(Path(config.hydra.runtime.output_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(Path(config.hydra.sweep.dir))

    @staticmethod
    def _write(root: Path) -> None:
        if int(os.environ.get("LOCAL_RANK", "0")) > 0:  # DDP child processes re-run the script: one report
            return
        if not root.is_dir():  # a run that failed before saving anything removes its directory
            return
        try:
            print(f"[sepdense] report: {write_report(root) / 'report.md'}")
            log_report(root)  # a run tracked in MLflow gets its report as artifacts too
        except Exception as err:  # the runs themselves are saved; a report problem must not look like a failed run
            print(f"[sepdense] could not write the report for {root} ({type(err).__name__}: {err}); "
                  f"run `python -m sepdense.report {root}` to retry.")  # fmt: skip
