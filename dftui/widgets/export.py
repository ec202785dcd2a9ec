"""Export a node's result to a file: every row (not only the rows the panel shows), as CSV for
row sets (columns in the statement's order, JSON for nested values) and JSON otherwise."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from dftui.client import NodeInfo


def export_dir() -> Path:
    return Path(os.environ.get("DFTUI_EXPORT_DIR") or Path.cwd())


def export_result(instance_id: str, node: NodeInfo) -> tuple[Path, int | None]:
    """Write the file; returns its path and the row count (None for a non-row result)."""
    result = node.result
    base = export_dir() / f"dftui-{instance_id}-{node.id}"
    if isinstance(result, dict) and isinstance(result.get("rows"), list):
        rows = [r for r in result["rows"] if isinstance(r, dict)]
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        path = base.with_suffix(".csv")
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(row.get(c)) for c in columns])
        return path, len(rows)
    path = base.with_suffix(".json")
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path, None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
