"""Presets run exactly the generators they name; --config overrides are typed; settings that cannot fit the data
stop the workflow with one line naming the setting.

Every shipped preset is dry-run (on small stand-in data where it names real data) and its scheduled rules are
compared, generator by generator, with what that preset asks for.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from medsci.config import config_from_dict, load_config, read_preset, workflow_settings
from medsci.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
GENERATORS = ("synthesis", "seismic", "rotation", "longitudinal")


def dry_run(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def scheduled(res) -> dict[str, int]:
    """{rule: job count} from a dry run's job stats."""
    assert res.returncode == 0, res.stderr[-3000:]
    stats = res.stdout[res.stdout.index("Job stats:"):].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def by_generator(rules: dict[str, int]) -> dict[str, set[str]]:
    """Rules grouped by generator, scattered parts (synthesis_sample_3) folded into one name (synthesis_sample)."""
    out: dict[str, set[str]] = {}
    for rule in rules:
        if rule in ("all", "resolved_config"):
            continue
        name = next(g for g in GENERATORS if rule.startswith(g + "_"))
        out.setdefault(name, set()).add(re.sub(r"_\d+$", "", rule))
    return out


def one_line_refusal(res, *needles):
    assert res.returncode == 1, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    lines = [line for line in res.stderr.splitlines() if line.startswith("medsci:")]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and 'File "' not in res.stderr, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


DEMO_RULES = {
    "synthesis": {"synthesis_demo_data", "synthesis_preprocess", "synthesis_summary", "synthesis_train",
                  "synthesis_segmenter", "synthesis_sample", "synthesis_steps_curve", "synthesis_evaluate"},
    "seismic": {"seismic_demo_data", "seismic_masks", "seismic_train", "seismic_reconstruct", "seismic_benchmark",
                "seismic_evaluate"},
    "rotation": {"rotation_demo_data", "rotation_pairs", "rotation_train", "rotation_sample", "rotation_evaluate"},
    "longitudinal": {"longitudinal_demo_data", "longitudinal_preprocess", "longitudinal_train",
                     "longitudinal_sample", "longitudinal_evaluate"},
}


@pytest.mark.parametrize("preset", [None, "configs/test.yaml"])  # None: the embedded default, demo.yaml
def test_demo_presets_run_all_four_generators(tmp_path, preset):
    args = ["--configfile", preset] if preset else []
    rules = scheduled(dry_run(tmp_path, *args, "--config", f"results={tmp_path}"))
    assert by_generator(rules) == DEMO_RULES
    assert rules["synthesis_sample_1"] == 1 and rules["resolved_config"] == 1


@pytest.fixture
def brats_cases(tmp_path):
    """24 BraTS-layout case folders of empty files: enough for a dry run, which reads only names."""
    root = tmp_path / "brats"
    for i in range(24):
        case = root / f"BraTS-GLI-{i:05d}-000"
        case.mkdir(parents=True)
        for mod in ("t1n", "t1c", "t2w", "t2f", "seg"):
            (case / f"{case.name}-{mod}.nii.gz").touch()
    return root


def test_brats_preset_schedules_synthesis_only(tmp_path, brats_cases):
    rules = scheduled(dry_run(tmp_path, "--configfile", "configs/brats.yaml", "--config", f"results={tmp_path}",
                              f'synthesis={{"data": {{"raw_dir": "{brats_cases}", "heldout": 6}}}}'))
    assert by_generator(rules) == {"synthesis": DEMO_RULES["synthesis"] - {"synthesis_demo_data"}}
    assert rules["synthesis_preprocess"] == 24
    assert sum(n for r, n in rules.items() if r.startswith("synthesis_sample_")) == 6
    assert rules["synthesis_steps_curve"] == 5  # brats.yaml's curve: 10, 25, 50, 100, 1000 steps


def test_seismic_real_preset_schedules_seismic_only(tmp_path):
    survey = tmp_path / "stand-in.segy"
    survey.touch()  # a dry run reads no trace
    rules = scheduled(dry_run(tmp_path, "--configfile", "configs/seismic-real.yaml", "--config", f"results={tmp_path}",
                              f'seismic={{"data": {{"survey": "{survey}"}}}}'))
    assert by_generator(rules) == {"seismic": {"seismic_split_survey", "seismic_masks", "seismic_train",
                                               "seismic_reconstruct", "seismic_benchmark", "seismic_fill_survey",
                                               "seismic_evaluate"}}


@pytest.mark.parametrize("preset, pixels, grid", [("rotation-256.yaml", 256, 64), ("rotation-512.yaml", 512, 128)])
def test_radiograph_scale_rotation_presets_schedule_rotation_only_at_their_size(tmp_path, preset, pixels, grid):
    """The GPU presets train on a folder of CTs (here three tiny stand-ins) at 256^2 / 512^2 over 430 mm, and the
    network they define sees its two Haar levels: 16 subbands per channel on a grid 4x smaller."""
    from medsci.diffusion.conditioning import Conditions
    from medsci.diffusion.networks import build_network
    from medsci.tasks.rotation.demo import write_demo_cts
    from medsci.tasks.rotation.pipeline import checkpoint_config

    cts = tmp_path / "cts"
    write_demo_cts(cts, n=3, shape=(16, 16, 16), spacing=(20.0, 20.0, 20.0))
    rules = scheduled(dry_run(tmp_path, "--configfile", f"configs/{preset}", "--config", f"results={tmp_path}",
                              f'rotation={{"data": {{"raw_dir": "{cts}", "heldout": 1}}}}'))
    assert by_generator(rules) == {"rotation": DEMO_RULES["rotation"] - {"rotation_demo_data"}}
    assert rules["rotation_pairs"] == 3
    cfg = load_config(REPO / "configs" / preset).rotation
    assert tuple(cfg.drr.pixels) == (pixels, pixels) and cfg.drr.pixels[0] * cfg.drr.spacing[0] == pytest.approx(430, abs=1)
    net = build_network(checkpoint_config(cfg)["model"])
    seen = {}
    net.unet.conv_in.register_forward_hook(lambda m, i, o: seen.update(shape=tuple(i[0].shape)))
    with torch.no_grad():
        out = net(torch.zeros(1, 1, pixels, pixels), torch.tensor([500]),
                  Conditions(condition=torch.zeros(1, 2, pixels, pixels), vector=torch.zeros(1, 6)))
    assert out.shape == (1, 1, pixels, pixels) and seen["shape"] == (1, 3 * 16, grid, grid)


def test_every_shipped_preset_is_dry_run_here():
    tested = {"demo.yaml", "test.yaml", "brats.yaml", "seismic-real.yaml", "rotation-256.yaml", "rotation-512.yaml"}
    assert {p.name for p in (REPO / "configs").glob("*.yaml")} == tested


def test_config_overrides_are_typed(tmp_path):
    res = dry_run(tmp_path, "--configfile", "configs/test.yaml", "--config", f"results={tmp_path}",
                  'rotation={"enabled": false}', 'synthesis={"train": {"steps": 10}}', "--printshellcmds")
    groups = by_generator(scheduled(res))
    assert set(groups) == {"synthesis", "seismic", "longitudinal"}
    settings = workflow_settings([REPO / "configs/test.yaml"], {"rotation": {"enabled": "false"},
                                                                 "synthesis": {"train": {"steps": "10", "lr": "1e-3"},
                                                                               "data": {"raw_dir": "null"}}})
    cfg = config_from_dict(settings)
    assert cfg.rotation.enabled is False and cfg.synthesis.train.steps == 10 and cfg.synthesis.train.lr == 0.001
    assert cfg.synthesis.data.raw_dir is None
    assert cfg.seismic.train.steps == 4  # test.yaml's own, untouched


@pytest.mark.parametrize("override,message", [
    ('synthesis={"data": {"heldout": "abc"}}', "synthesis.data.heldout: 'abc' is not of type 'integer'"),
    ('rotation={"enabled": "maybe"}', "rotation.enabled: 'maybe' is not of type 'boolean'"),
    ('seismic={"train": {"lr": "fast"}}', "seismic.train.lr: 'fast' is not of type 'number'"),
])
def test_an_override_of_the_wrong_type_is_refused(tmp_path, override, message):
    one_line_refusal(dry_run(tmp_path, "--config", f"results={tmp_path}", override), message)


def test_heldout_larger_than_the_data_is_one_line(tmp_path, brats_cases):
    res = dry_run(tmp_path, "--configfile", "configs/brats.yaml", "--config", f"results={tmp_path}",
                  f'synthesis={{"data": {{"raw_dir": "{brats_cases}"}}}}')  # brats.yaml holds out 100
    one_line_refusal(res, "synthesis.data.heldout", "100", "only 24 cases")
    res = dry_run(tmp_path, "--configfile", "configs/test.yaml", "--config", f"results={tmp_path}",
                  'longitudinal={"data": {"heldout": 3}}')  # test.yaml's demo has 3 subjects
    one_line_refusal(res, "longitudinal.data.heldout", "only 3 subjects")


def test_nothing_held_out_is_one_line(tmp_path):
    res = dry_run(tmp_path, "--configfile", "configs/test.yaml", "--config", f"results={tmp_path}",
                  'seismic={"data": {"heldout": 0}}')
    one_line_refusal(res, "seismic.data.heldout: 0", "at least one held-out")


def test_a_count_beyond_the_heldout_data_is_one_line(tmp_path):
    res = dry_run(tmp_path, "--configfile", "configs/test.yaml", "--config", f"results={tmp_path}",
                  'synthesis={"evaluation": {"curve_cases": 3}}')  # 2 held out
    one_line_refusal(res, "synthesis.evaluation.curve_cases", "3 asked for", "only 2 held-out cases")


def test_missing_data_folder_is_one_line(tmp_path):
    res = dry_run(tmp_path, "--configfile", "configs/brats.yaml", "--config", f"results={tmp_path}")
    one_line_refusal(res, "synthesis.data.raw_dir", "/data/BraTS2024-BraSyn/train", "does not exist")
    res = dry_run(tmp_path, "--configfile", "configs/test.yaml", "--config", f"results={tmp_path}",
                  f'seismic={{"data": {{"raw_dir": "{tmp_path / "nowhere"}"}}}}')
    one_line_refusal(res, "seismic.data.raw_dir", str(tmp_path / "nowhere"))
    res = dry_run(tmp_path, "--configfile", "configs/test.yaml", "--config", f"results={tmp_path}",
                  f'synthesis={{"batch": {{"input": "{tmp_path / "no-cases"}"}}}}')
    one_line_refusal(res, "synthesis.batch.input", str(tmp_path / "no-cases"))


def test_a_generator_that_is_not_installed_is_one_line(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("name: p\nsegmentation3d:\n  enabled: true\n")
    line = one_line_refusal(dry_run(tmp_path, "--configfile", str(preset)), "segmentation3d")
    installed = line[line.index("(installed: ") + len("(installed: "):].rstrip(")").split(", ")
    assert set(GENERATORS) <= set(installed) and "segmentation3d" not in installed


def test_a_preset_naming_no_generator_is_refused(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("name: p\nseismic:\n  enabled: false\n")
    one_line_refusal(dry_run(tmp_path, "--configfile", str(preset)), "no generator is enabled")


# ------------------------------------------------------------------------------------- the preset files themselves
def test_absent_section_is_disabled(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("seismic:\n  enabled: true\n")
    cfg = load_config(preset)
    assert cfg.seismic.enabled and not any(cfg.section(g).enabled for g in GENERATORS if g != "seismic")


def test_defaults_chain_is_merged_underneath(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nseismic:\n  enabled: true\n  train: {steps: 7, lr: 0.01}\n")
    (tmp_path / "mid.yaml").write_text("defaults: base.yaml\nseismic:\n  train: {steps: 9}\n")
    (tmp_path / "top.yaml").write_text("defaults: mid.yaml\nname: top\n")
    assert read_preset(tmp_path / "top.yaml") == {"name": "top", "seismic": {"enabled": True,
                                                                             "train": {"steps": 9, "lr": 0.01}}}
    test = yaml.safe_load((REPO / "configs/test.yaml").read_text())
    assert test["defaults"] == "demo.yaml"  # the only preset that builds on another, and it says so
    for name in ("demo.yaml", "brats.yaml", "seismic-real.yaml"):
        assert "defaults" not in yaml.safe_load((REPO / "configs" / name).read_text())


def test_defaults_cycle_and_missing_base_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: b.yaml\n")
    (tmp_path / "b.yaml").write_text("defaults: a.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        read_preset(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("defaults: nope.yaml\n")
    with pytest.raises(ConfigError, match="nope.yaml not found"):
        read_preset(tmp_path / "c.yaml")


@pytest.mark.parametrize("register,flag", [(True, " --register "), (False, " --no-register "), (None, None)])
def test_batch_registration_reaches_the_command_line(tmp_path, register, flag):
    """synthesis.batch.register is `medsci synthesize --register / --no-register` in every batch job; null (the
    default, as the command's: registered for DICOM input only) passes neither."""
    cases = tmp_path / "cases"
    for name in ("c1", "c2"):
        (cases / name).mkdir(parents=True)
    batch = {"input": str(cases)} if register is None else {"input": str(cases), "register": register}
    res = dry_run(tmp_path, "--configfile", "configs/test.yaml", "--config", f"results={tmp_path}",
                  f"synthesis={{\"batch\": {yaml.safe_dump(batch, default_flow_style=True).strip()}}}",
                  "--printshellcmds", "--forceall")
    assert res.returncode == 0, res.stderr[-3000:]
    commands = [line.split("Shell command: ", 1)[-1] for line in res.stdout.splitlines()
                if "medsci synthesize " in line]
    assert len(commands) == 3, res.stdout[-3000:]  # one job per case, then the report
    for command in commands:
        flags = re.findall(r" (--(?:no-)?register)\b", command)
        assert flags == ([] if flag is None else [flag.strip()]), command
    assert load_config(REPO / "configs/test.yaml").synthesis.batch.register is None


def test_batch_registration_must_be_true_false_or_null(tmp_path):
    res = dry_run(tmp_path, "--configfile", "configs/test.yaml", "--config", f"results={tmp_path}",
                  'synthesis={"batch": {"register": "maybe"}}')
    one_line_refusal(res, "synthesis.batch.register: 'maybe' is not of type 'boolean', 'null'")
