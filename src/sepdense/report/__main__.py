"""`python -m sepdense.report <run-or-sweep-dir>`: write (or rewrite) the report of existing runs.

`python -m sepdense.report <sweep-dir> --publish <folder>`: copy its complete runs (configs, results, curves; no
checkpoints) into <folder> and write the report there, e.g. results/comparison_cpu for git."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sepdense.report.build import write_report
from sepdense.report.publish import publish


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sepdense.report", description=__doc__)
    parser.add_argument("directory", type=Path, help="a run directory or a sweep directory of runs")
    parser.add_argument("--publish", type=Path, metavar="FOLDER",
                        help="copy the complete runs into FOLDER (no checkpoints) and report there")  # fmt: skip
    args = parser.parse_args()
    try:
        if args.publish is not None:
            publish(args.directory, args.publish)
        out = write_report(args.publish or args.directory)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print((out / "report.md").read_text())
    summary = json.loads((out / "summary.json").read_text())
    print(f"\n{summary['completion']}. Report written to {out}")


if __name__ == "__main__":
    main()
