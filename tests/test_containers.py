"""Software deployment: the conda env file and the container recipes pin the same dependencies, and under
`--sdm apptainer` every rule runs inside the configured image.

No Apptainer, conda-forge or container registry is reachable on the development machine, so the image itself is
not built here; a stand-in `apptainer` records how Snakemake calls it and runs the command on the host.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / "workflows" / "envs"

STAND_IN = """#!{python}
import json, os, sys
args = sys.argv[1:]
if "--version" in args:
    print("apptainer version 1.3.4")
    sys.exit(0)
with open(os.environ["APPTAINER_CALLS"], "a") as fh:
    fh.write(json.dumps(args) + "\\n")
image = args.index(os.environ["EXPECTED_IMAGE"])
os.execvp(args[image + 1], args[image + 1:])
"""


def _lock():
    lines = (ENVS / "requirements.lock").read_text(encoding="utf-8").splitlines()
    return dict(line.split("==") for line in lines if line and not line.startswith("#"))


def test_lock_pins_every_runtime_dependency_exactly():
    import tomllib

    lock = _lock()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    names = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower() for d in deps}
    assert names <= set(lock), names - set(lock)
    assert lock["monai"] == "1.5.2" and lock["torch"].startswith("2.13")  # the versions the tests ran with
    assert all(re.fullmatch(r"\d+(\.\d+)*(\.post\d+)?", v) for v in lock.values()), "pins only, no ranges"


def test_conda_env_and_container_recipes_install_the_lock_and_this_checkout():
    env = yaml.safe_load((ENVS / "medsci.yaml").read_text(encoding="utf-8"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-r requirements.lock" in pip and "-e ../.." in pip
    assert (ENVS / pip[-1].split()[-1] / "pyproject.toml").resolve() == REPO / "pyproject.toml"
    for recipe in ("Dockerfile", "medsci.def"):
        text = (ENVS / recipe).read_text(encoding="utf-8")
        assert "requirements.lock" in text and "python:3.11-slim-bookworm" in text, recipe
        assert "medsci --version" in text, recipe  # the build fails if medsci does not import


def test_every_rule_runs_in_the_configured_image_under_sdm_apptainer(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "apptainer"
    shim.write_text(STAND_IN.format(python=sys.executable), encoding="utf-8")
    shim.chmod(0o755)
    image = tmp_path / "medsci.sif"
    image.write_bytes(b"stand-in image")
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "APPTAINER_CALLS": str(calls), "EXPECTED_IMAGE": str(image)}
    results = tmp_path / "results"
    target = results / "test" / "seismic" / "masks" / "cube_002-random.npy"
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--sdm", "apptainer",
                          "--configfile", "configs/test.yaml", "--config", f"results={results}",
                          f"container={image}", "--", str(target)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert target.is_file()
    wrapped = [json.loads(line) for line in calls.read_text(encoding="utf-8").splitlines()]
    commands = [" ".join(c) for c in wrapped]
    # resolved_config runs Python in Snakemake itself; every shell rule on the way is wrapped
    assert len(wrapped) == 2 and all(c[0] == "exec" and str(image) in c for c in wrapped), commands
    assert any("medsci demo-data seismic" in c for c in commands)
    assert any("medsci sample seismic" in c and "--make-masks" in c for c in commands)
