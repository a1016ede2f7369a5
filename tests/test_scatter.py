"""Scatter/gather of held-out sampling: `sample_jobs` from the config decides how many jobs share the cases."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _jobs(tmp_path, *overrides):
    """Job counts per rule of a dry run of the tiny workflow."""
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", "configs/test.yaml",
                          "--config", f"results={tmp_path}", *overrides, "--printshellcmds"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    table = {m.group(1): int(m.group(2))
             for m in re.finditer(r"^(\w+)\s+(\d+)$", res.stdout + res.stderr, re.MULTILINE)}
    return table, res.stdout


@pytest.mark.parametrize("sample_jobs, expected", [
    # test.yaml holds out 2 synthesis cases and 1 cube / subject / CT
    (0, {"synthesis_sample_1": 1, "synthesis_sample_2": 1, "seismic_reconstruct_1": 1}),
    (1, {"synthesis_sample_1": 1, "seismic_reconstruct_1": 1, "longitudinal_sample_1": 1, "rotation_sample_1": 1}),
])
def test_sample_jobs_scatters_the_heldout_cases(tmp_path, sample_jobs, expected):
    table, text = _jobs(tmp_path, f"sample_jobs={sample_jobs}")
    for rule, count in expected.items():
        assert table.get(rule) == count, (rule, table)
    cases = [m.group(1) for line in text.splitlines() if "--steps-curve" not in line
             for m in [re.search(r"medsci sample synthesis .*?--case (.+?) --targets", line)] if m]
    if sample_jobs == 1:  # one job, one model load, both held-out cases; its log is named after the part
        assert "synthesis_sample_2" not in table
        assert len(cases) == 1 and len(cases[0].split()) == 2
        assert "logs/synthesis/sample/part-1-of-1.log" in text
    else:  # one job per case, its log named after the case
        assert sorted(len(c.split()) for c in cases) == [1, 1]
        assert all(f"logs/synthesis/sample/{c}.log" in text for c in cases)
