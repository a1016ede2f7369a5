"""Does an uncertainty map predict the error? The three scores every generator's table reports.

- ``spearman``: rank correlation of the voxelwise uncertainty (a standard deviation) with the absolute error;
- ``top_decile_ratio``: mean absolute error in the 10 % most uncertain voxels over the mean in the rest;
- ``coverage90``: the fraction of voxels whose error lies inside the nominal 90 % Gaussian interval
  (|error| <= 1.645 std); 0.90 when the map is calibrated, lower when it is overconfident.

Each is computed per output (one volume, section or image) inside the region the table scores, then averaged
over outputs: what a reader of one map experiences, not a correlation made up by differences between cases.
"""

from __future__ import annotations

import numpy as np

Z90 = 1.6448536269514722  # two-sided 90 % quantile of the standard normal
SCORES = ("spearman", "top_decile_ratio", "coverage90")


def uncertainty_scores(std: np.ndarray, error: np.ndarray, region: np.ndarray | None = None) -> dict[str, float]:
    """The scores of one output; ``error`` = prediction - truth, ``region`` (bool, broadcastable) the scored voxels.

    Non-finite scores (a constant map, no error at all) are NaN: they say the map carries no ranking.
    """
    from scipy.stats import spearmanr

    s = np.asarray(std, dtype=np.float64)
    e = np.abs(np.asarray(error, dtype=np.float64))
    if region is not None:
        keep = np.broadcast_to(np.asarray(region, dtype=bool), s.shape)
        s, e = s[keep], e[keep]
    s, e = s.ravel(), e.ravel()
    nan = {k: float("nan") for k in SCORES}
    if s.size < 10:
        return nan
    out = dict(nan)
    out["coverage90"] = float(np.mean(e <= Z90 * s))
    if np.ptp(s) == 0 or np.ptp(e) == 0:
        return out
    out["spearman"] = float(spearmanr(s, e).statistic)
    top = s >= np.quantile(s, 0.9)
    if top.all() or not top.any():
        return out
    rest = e[~top].mean()
    out["top_decile_ratio"] = float(e[top].mean() / rest) if rest > 0 else float("inf")
    return out


def mean_scores(rows: list[dict]) -> dict[str, float | None]:
    """Mean of each score over outputs (non-finite ones left out); None where no output had one."""
    out = {}
    for key in SCORES:
        vals = np.array([r[key] for r in rows if r.get(key) is not None], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[key] = float(vals.mean()) if vals.size else None
    return out


def scores_markdown(scores: dict | None, what: str = "") -> str:
    """One line for a summary: the three scores of a method's uncertainty, or why there are none."""
    if not scores or all(scores.get(k) is None for k in SCORES):
        return f"Uncertainty{what}: none (the model gave no uncertainty map)."

    def f(key, fmt):
        v = scores.get(key)
        return "n/a" if v is None else format(v, fmt)

    return (f"Uncertainty{what}: Spearman(std, |error|) {f('spearman', '.3f')}, top-decile error ratio "
            f"{f('top_decile_ratio', '.2f')}x, 90 % interval coverage {f('coverage90', '.3f')}.")
