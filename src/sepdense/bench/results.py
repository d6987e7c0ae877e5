"""Writing a benchmark's results: results.json, one CSV per level and results.md with the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepdense.tables import write_csv, write_json


def write_results(out_dir: Path, results: dict[str, Any], tables: dict[str, str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "results.json", results)
    for level, rows in results.get("levels", {}).items():
        if rows:
            write_csv(out_dir / f"{level}.csv", rows)
    (out_dir / "results.md").write_text("\n".join(f"## {title}\n\n{table}" for title, table in tables.items()))
