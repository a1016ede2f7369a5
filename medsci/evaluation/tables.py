"""Result tables shared by every generator: per-item metric rows -> CSV, mean/std summaries, and the three
result files (metrics.csv, summary.json, summary.md) of an evaluation."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from medsci.io.atomic import write_json_atomic, write_text_atomic


def metric_stats(rows: list[dict], metrics: tuple[str, ...]) -> dict:
    """``{metric: {mean, std, n}}`` over ``rows``; non-finite values are left out (n says how many counted)."""
    out = {}
    for metric in metrics:
        vals = np.array([r[metric] for r in rows], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[metric] = {"mean": float(vals.mean()) if vals.size else None,
                       "std": float(vals.std()) if vals.size else None, "n": int(vals.size)}
    return out


def write_rows_csv(path: str | Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def write_tables(out: str | Path, rows: list[dict], summary: dict, sections: str | list[str]) -> None:
    """The three result files of every generator's evaluation in ``out``: ``metrics.csv`` (one row per scored
    item, columns in the order of the first row), ``summary.json`` (sorted keys, 2-space indent) and
    ``summary.md`` (``sections`` joined as they are). Each is written atomically, csv first, markdown last."""
    out = Path(out)
    write_rows_csv(out / "metrics.csv", rows)
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", sections if isinstance(sections, str) else "".join(sections))
