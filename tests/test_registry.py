"""The task registry: a generator is a package that registers itself; core modules name no generator."""

import ast
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from medsci import registry
from medsci.config import config_from_dict, schema
from medsci.config_section import ConfigSection
from medsci.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

# A whole generator in one module plus one rule file: config section, a demo-data verb, a rule.
SKELETON = '''
"""A toy generator registered from outside medsci: it writes its message to a file."""

from dataclasses import dataclass
from pathlib import Path

from medsci.config_section import ConfigSection
from medsci.registry import Task, register


@dataclass
class ToyConfig(ConfigSection):
    enabled: bool = True
    message: str = "hello"


def register_demo_data(tasks):
    p = tasks.add_parser("toy", help="write the toy generator's message")
    p.add_argument("out")
    p.add_argument("--message", default="hello")
    p.set_defaults(handler=lambda args: Path(args.out).write_text(args.message) and 0)


register(Task(name="toy", title="a toy generator from a test", config=ToyConfig, commands=__name__,
              rules=str(Path(__file__).with_name("toy.smk")), schema={"type": "object", "properties": {
                  "enabled": {"type": "boolean"}, "message": {"type": "string"}}, "additionalProperties": False}))
'''

RULES = '''
# The toy generator's rules: one output, through the medsci command line.

TOY = CFG.toy
TARGETS["toy"] = [str(task_dir("toy") / "message.txt")] if TOY.enabled else []

if TOY.enabled:

    rule toy_demo:
        output:
            str(task_dir("toy") / "message.txt"),
        params:
            message=TOY.message,
        log:
            log_path("toy", "demo.log"),
        shell:
            "medsci demo-data toy {output} --message {params.message} > {log} 2>&1"
'''


@pytest.fixture()
def plugin(tmp_path):
    (tmp_path / "toy_generator.py").write_text(SKELETON)
    (tmp_path / "toy.smk").write_text(textwrap.dedent(RULES))
    env = {**os.environ, "MEDSCI_TASKS": "toy_generator",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return tmp_path, env


def test_builtin_generators_are_registered_with_their_sections_and_verbs():
    tasks = registry.tasks()
    assert {"synthesis", "seismic"} <= set(tasks)
    assert tasks["synthesis"].verb_hook("train") is not None and tasks["seismic"].verb_hook("preprocess") is None
    full = schema()
    assert full["properties"]["seismic"]["properties"]["inference"] == {"$ref": "#/$defs/inference"}


def test_a_generator_registered_here_gets_a_config_section_and_schema():
    @dataclass
    class Section(ConfigSection):
        enabled: bool = True
        size: int = 3

    task = registry.register(registry.Task(name="inline_toy", title="t", config=Section,
                                           schema={"type": "object", "properties": {"size": {"minimum": 1}}}))
    try:
        cfg = config_from_dict({"inline_toy": {"size": 5}})
        assert cfg.inline_toy.size == 5 and cfg.to_dict()["inline_toy"] == {"enabled": True, "size": 5}
        with pytest.raises(ConfigError, match="inline_toy.size"):
            config_from_dict({"inline_toy": {"size": 0}})  # the generator's schema fragment is applied
        with pytest.raises(ConfigError, match="unknown key"):
            config_from_dict({"inline_toy": {"sise": 5}})  # the dataclass refuses what the schema lets through
        with pytest.raises(ConfigError, match="already registered"):
            registry.register(registry.Task(name="inline_toy", title="other", config=Section))
    finally:
        registry.unregister(task.name)
    with pytest.raises(ConfigError, match="inline_toy: not a setting and not an installed generator .installed: "):
        config_from_dict({"inline_toy": {"size": 5}})


def test_a_plugin_generator_appears_in_the_cli_and_the_workflow_without_core_changes(plugin, tmp_path):
    folder, env = plugin
    medsci = [sys.executable, "-m", "medsci"]
    top = subprocess.run(medsci + ["--help"], env=env, capture_output=True, text=True, check=True).stdout
    assert "toy (a toy generator from a test)" in " ".join(top.split())
    demo = subprocess.run(medsci + ["demo-data", "--help"], env=env, capture_output=True, text=True, check=True)
    assert "toy" in demo.stdout and "synthesis" in demo.stdout and "seismic" in demo.stdout

    from medsci import registry

    config = tmp_path / "toy.yaml"
    builtin = "".join(f"{name}: {{enabled: false}}\n" for name in registry.tasks() if name != "toy")
    config.write_text(f"name: toyrun\nresults: {tmp_path / 'results'}\ndevice: cpu\n{builtin}toy: {{message: drop-in}}\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(config)], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert (tmp_path / "results" / "toyrun" / "toy" / "message.txt").read_text() == "drop-in"
    assert not (tmp_path / "results" / "toyrun" / "synthesis").exists()


def test_a_missing_plugin_module_is_one_line_not_a_traceback(tmp_path):
    env = {**os.environ, "MEDSCI_TASKS": "no_such_generator_module"}
    res = subprocess.run([sys.executable, "-m", "medsci", "--help"], env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "no_such_generator_module" in res.stderr and "Traceback" not in res.stderr


CORE = ["config.py", "config_section.py", "registry.py", "cli.py", "bench.py", "wavelets.py", "errors.py", "generator.py"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_core_module_imports_a_generator_and_no_generator_imports_another():
    core = [REPO / "medsci" / f for f in CORE]
    core += [p for sub in ("diffusion", "commands", "io", "evaluation", "preprocessing")
             for p in (REPO / "medsci" / sub).glob("*.py")]
    for path in core:
        bad = [m for m in _imports(path) if m.startswith("medsci.tasks.")]  # the package itself is where discovery looks
        assert not bad, f"{path.relative_to(REPO)} imports {bad}"
    tasks = [p.name for p in (REPO / "medsci" / "tasks").iterdir() if (p / "__init__.py").is_file()]
    for task in tasks:
        for path in (REPO / "medsci" / "tasks" / task).glob("*.py"):
            others = [m for m in _imports(path) for t in tasks if t != task and m.startswith(f"medsci.tasks.{t}")]
            assert not others, f"{path.relative_to(REPO)} imports {others}"
    snakefile = (REPO / "Snakefile").read_text(encoding="utf-8") + (REPO / "workflows" / "common.smk").read_text(encoding="utf-8")
    assert "synthesis" not in snakefile and "seismic" not in snakefile
