"""Checks that a SLURM run can be submitted at all, made once before the first job (the workflow's onstart).

Without them a wrong partition or a GPU count no node has fails at the first ``sbatch``, and for grouped jobs
Snakemake shows the job as failed with ``message: None``: sbatch's reason is lost. Here the run stops with the
reason and the fix. Where ``sinfo`` does not answer nothing is checked (the plugin's own errors remain).
"""

from __future__ import annotations

import re
import subprocess


def _sinfo() -> dict[str, int] | None:
    """Partition -> the most GPUs on one of its nodes; the default partition is keyed '*' too."""
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%P %G"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode:
        return None
    partitions: dict[str, int] = {}
    for line in res.stdout.splitlines():
        name, _, gres = line.strip().partition(" ")
        if not name:
            continue
        gpus = sum(int(m.group(1)) for m in re.finditer(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)", gres))
        for key in (name.rstrip("*"), "*") if name.endswith("*") else (name,):
            partitions[key] = max(partitions.get(key, 0), gpus)
    return partitions


def slurm_problems(partitions: set[str], gpus_per_job: int, sinfo=_sinfo) -> list[str]:
    """Reasons this run cannot be submitted: partitions that do not exist, more GPUs per job than any node has."""
    available = sinfo()
    if available is None:
        return []
    listed = sorted(k for k in available if k != "*")
    problems = [f"SLURM partition '{p}' does not exist on this cluster (sinfo lists: {', '.join(listed) or 'none'});"
                " set slurm_partition in your profile (default-resources) or on the command line"
                for p in sorted(partitions) if p not in available]
    if gpus_per_job > 0:
        where = [p for p in partitions if p in available] or (["*"] if "*" in available else listed)
        most = max((available[p] for p in where), default=0)
        if most < gpus_per_job:
            names = ", ".join("the default partition" if p == "*" else f"'{p}'" for p in where) or "any partition"
            problems.append(f"a training job asks for {gpus_per_job} GPU(s) (train_gpus) but no node of {names} has "
                            f"more than {most}; lower train_gpus, or choose a GPU partition (slurm_partition)")
    return problems
