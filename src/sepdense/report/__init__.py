"""Reports a person can read, built from what runs saved (nothing is re-trained).

`python -m sepdense.report <run-or-sweep-dir>` writes `<dir>/report/`: report.md, summary.csv,
summary.json and PNG figures; the Hydra callback ``ReportCallback`` does the same at the end of
every run and sweep. Modules: ``aggregate`` (grouping, mean ± std), ``findings`` (the paragraph),
``figures``, ``build`` (writes the files), ``hydra_callback``.
"""

from sepdense.report.build import write_report
from sepdense.report.hydra_callback import ReportCallback

__all__ = ["ReportCallback", "write_report"]
