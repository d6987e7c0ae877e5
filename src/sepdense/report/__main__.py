"""`python -m sepdense.report <run-or-sweep-dir>`: write (or rewrite) the report of existing runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sepdense.report.build import write_report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sepdense.report", description=__doc__)
    parser.add_argument("directory", type=Path, help="a run directory or a sweep directory of runs")
    args = parser.parse_args()
    try:
        out = write_report(args.directory)
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    print((out / "report.md").read_text())
    summary = json.loads((out / "summary.json").read_text())
    print(f"\n{summary['complete']} of {len(summary['runs'])} runs complete. Report written to {out}")


if __name__ == "__main__":
    main()
