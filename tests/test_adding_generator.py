"""docs/adding-a-generator.md, followed to the letter: its `blobs` generator is written from the page's code blocks,
registered through MEDSCI_TASKS, and run through the stage contract (medsci.generator) on tiny data."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medsci import registry
from medsci.cli import main
from medsci.config import config_from_dict, load_config
from medsci.errors import ConfigError
from medsci.generator import Generator, LoadedModel

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "adding-a-generator.md"
# A fenced block that names its file: ```python file=blobs/pipeline.py
BLOCK = re.compile(r"^```\w+ file=(\S+)\n(.*?)^```$", re.M | re.S)


def doc_files() -> dict[str, str]:
    return {name: text for name, text in BLOCK.findall(DOC.read_text(encoding="utf-8"))}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The page's package written to a folder, and the environment that registers it (MEDSCI_TASKS)."""
    root = tmp_path_factory.mktemp("plugin")
    for name, text in doc_files().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    env = {**os.environ, "MEDSCI_TASKS": "blobs",
           "PYTHONPATH": os.pathsep.join([str(root), str(REPO), os.environ.get("PYTHONPATH", "")])}
    return root, env


@pytest.fixture()
def blobs(package, monkeypatch):
    """The generator registered in this process the way `medsci` registers it (MEDSCI_TASKS), removed after."""
    root, _ = package
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv(registry.ENV_VAR, "blobs")
    registry._import_env()
    yield registry.get("blobs")
    registry.unregister("blobs")
    for name in [m for m in sys.modules if m == "blobs" or m.startswith("blobs.")]:
        del sys.modules[name]


def test_the_page_names_every_file_of_the_layout_and_every_hook_of_the_contract():
    files = doc_files()
    assert sorted(files) == ["blobs/__init__.py", "blobs/blobs.smk", "blobs/commands.py", "blobs/config.py",
                             "blobs/pipeline.py", "blobs/schema.yaml"]
    text = DOC.read_text(encoding="utf-8")
    # The stages the page documents are the contract's hooks and handlers.
    for hook in ("parse", "load", "train", "sample"):
        assert callable(getattr(Generator, hook)) and f"Generator.{hook}" in text
    for helper in ("add_train", "add_sample", "add_evaluate", "register_package", "preset", "add_command"):
        assert f"`{helper}" in text
    assert {"model", "config", "schedule", "device"} == set(LoadedModel.__dataclass_fields__)


def test_medsci_help_lists_its_verbs_without_importing_torch(package):
    _, env = package
    script = ("import sys; from medsci.cli import main\n"
              "for argv in (['--help'], ['demo-data', '--help'], ['train', '--help'], ['sample', '--help']):\n"
              "    assert main(argv) == 0\n"
              "print('torch imported:', 'torch' in sys.modules)\n")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    out = " ".join(res.stdout.split())
    assert "blobs (blobs: a bright blob where it is asked for (an example))" in out  # the generators line
    assert out.count("synthesis, blobs)") == 3  # demo-data, train and sample list it beside the built-ins
    assert "torch imported: False" in out


def test_its_config_section_validates_with_its_schema_and_dataclasses(blobs):
    assert blobs.rules == str(Path(sys.modules["blobs"].__file__).with_name("blobs.smk"))
    cfg = config_from_dict({"blobs": {"size": 16, "train": {"steps": 5}}}).blobs
    # A section given in the file starts from the engine's defaults (lr 2e-4), not from the generator's preset.
    assert (cfg.size, cfg.train.steps, cfg.train.lr, cfg.sample.steps) == (16, 5, 2e-4, 4)
    assert config_from_dict({}).blobs.train.lr == 1e-3
    assert cfg.model.unet.channels == (8, 8) and cfg.model.schedule.num_train_timesteps == 1000
    assert config_from_dict({}).blobs.to_dict()["model"]["unet"]["norm_num_groups"] == 4
    with pytest.raises(ConfigError, match="blobs.size"):
        config_from_dict({"blobs": {"size": 2}})  # the schema fragment's minimum
    with pytest.raises(ConfigError, match="bogus"):
        config_from_dict({"blobs": {"bogus": 1}})


def test_the_workflow_plans_its_rules(package, tmp_path):
    _, env = package
    config = tmp_path / "blobs.yaml"  # a preset runs the generators it names: this one alone
    config.write_text(f"name: blobsrun\nresults: {tmp_path / 'results'}\ndevice: cpu\nblobs: {{enabled: true}}\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(config)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for rule in ("blobs_demo", "blobs_train", "blobs_sample"):
        assert rule in res.stdout
    assert "synthesis_" not in res.stdout


def test_demo_data_train_and_sample_run_through_the_contract(blobs, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text("device: cpu\nblobs: {size: 8}\n")
    demo, model, out = tmp_path / "demo", tmp_path / "model", tmp_path / "samples"
    assert main(["demo-data", "blobs", str(demo), "--blobs", "32", "--seed", "3"]) == 0
    train = np.load(demo / "train.npy")
    assert train.shape == (32, 2) and 0.2 <= train.min() and train.max() <= 0.8

    assert main(["train", "blobs", "--config", str(config), "--centres", str(demo / "train.npy"), "--out",
                 str(model), "--no-progress", "--threads", "1"]) == 0
    ck = json.loads((model / "config.json").read_text())
    assert ck["task"] == "blobs" and ck["size"] == 8 and ck["model"]["vector_dim"] == 2

    # The load stage: the engine's path, the generator's fields from its parse.
    loaded = registry.resolve("blobs.pipeline:load_model")(model, "cpu")
    assert type(loaded).__name__ == "LoadedModel" and isinstance(loaded, LoadedModel)
    assert (loaded.size, loaded.sample.steps, loaded.schedule.num_train_timesteps) == (8, 4, 1000)
    assert not loaded.model.training and str(loaded.device) == "cpu"

    argv = ["sample", "blobs", "--config", str(config), "--checkpoint", str(model), "--centres",
            str(demo / "heldout.npy"), "--device", "cpu"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "heldout.npy: 4 blobs, 4 network evaluations" in capsys.readouterr().out
    images = np.load(out / "heldout.npy")
    assert images.shape == (4, 1, 8, 8) and np.isfinite(images).all() and images.std() > 0
    # The same seed gives the same bytes; the contract refuses to write an output over an input.
    assert main([*argv, "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "heldout.npy").read_bytes() == (out / "heldout.npy").read_bytes()
    assert main([*argv, "--out", str(demo)]) == 2
    assert "lies in the output folder" in capsys.readouterr().err
