"""Fuzzing the config loader: random bytes, YAML-ish text and mutations of configs/test.yaml either give a Config
or a one-line MedsciError (ConfigError), never another exception and never a hang: each example may use at most
2 s of CPU time (CPU, not wall-clock time, so a busy machine does not fail the test) and is stopped after 20 s."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medsci.config import Config, load_config
from medsci.errors import MedsciError

TEST_YAML = Path(__file__).resolve().parents[1] / "configs" / "test.yaml"
FUZZ = settings(derandomize=True, max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_TOKENS = ["a", "name", "synthesis", "train", "steps", ":", ": ", "- ", "[", "]", "{", "}", ",", "&x ", "*x", "!!str ",
           "!!python/object:os.system ", "!!binary ", "<<: ", "? ", "|", ">", "'", '"', "#", "\n", "\n  ", "\t", "0",
           "-1", "1e999", ".nan", ".inf", "null", "~", "true", "2024-01-01", "0x1F", "---\n", "...\n", "%YAML 1.2\n",
           "\\u0000", "\u00e9", "\ufeff", "!!bool ", "!!timestamp ", "!!int ", "!!float "]
_WEIRD_VALUES = ["-1", "0", ".nan", "-.inf", "1e999", "[]", "{}", "null", "''", "&a [*a]", "*nowhere", "!!set {a}",
                 "2024-01-01", "!!binary aGk=", "[1, [2, [3]]]", "{x: 1}", "yes", "0o17", "!!float 'x'",
                 "!!bool 'x'", "!!timestamp 'x'", "!!int 'x'", "9" * 5000]


@pytest.fixture(scope="module")
def folder():
    load_config(TEST_YAML)  # imports and the schema validator, built once: not part of any example's deadline
    with tempfile.TemporaryDirectory() as name:
        (Path(name) / "demo.yaml").write_bytes((TEST_YAML.parent / "demo.yaml").read_bytes())  # test.yaml's defaults:
        yield Path(name)


CPU_SECONDS, WALL_SECONDS = 2.0, 20


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang(f"an example ran for more than {WALL_SECONDS} s")


def _load(folder: Path, data: bytes) -> None:
    path = folder / "fuzz.yaml"
    path.write_bytes(data)
    started = time.process_time()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(WALL_SECONDS)
    try:
        config = load_config(path)
    except MedsciError as err:
        text = str(err)
        assert "\n" not in text.strip() and str(path) in text, text
        config = None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert time.process_time() - started < CPU_SECONDS, f"{time.process_time() - started:.1f} s of CPU"
    assert config is None or isinstance(config, Config)


@FUZZ
@given(data=st.binary(max_size=2000))
def test_random_bytes(folder, data):
    _load(folder, data)


@FUZZ
@given(tokens=st.lists(st.sampled_from(_TOKENS), max_size=80))
def test_yaml_like_text(folder, tokens):
    _load(folder, "".join(tokens).encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.data())
def test_mutated_test_config(folder, data):
    lines = TEST_YAML.read_text(encoding="utf-8").splitlines()
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        i = data.draw(st.integers(0, len(lines) - 1), label="line")
        kind = data.draw(st.sampled_from(["delete", "duplicate", "value", "indent", "token", "swap"]), label="kind")
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "value" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            lines[i] = f"{key}: {data.draw(st.sampled_from(_WEIRD_VALUES), label='value')}"
        elif kind == "indent":
            lines[i] = " " * data.draw(st.integers(0, 6), label="indent") + lines[i].lstrip()
        elif kind == "token":
            cut = data.draw(st.integers(0, len(lines[i])), label="at")
            lines[i] = lines[i][:cut] + data.draw(st.sampled_from(_TOKENS), label="token") + lines[i][cut:]
        else:
            j = data.draw(st.integers(0, len(lines) - 1), label="other")
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            break
    _load(folder, "\n".join(lines).encode())


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8)


def _leaves(node, path=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path


@FUZZ
@given(data=st.data())
def test_test_config_with_random_values(folder, data):
    """Valid YAML, wrong values: each setting of test.yaml in turn replaced by a random JSON-like value."""
    config = yaml.safe_load(TEST_YAML.read_text(encoding="utf-8"))
    leaves = list(_leaves(config))
    for _ in range(data.draw(st.integers(1, 3), label="replacements")):
        path = data.draw(st.sampled_from(leaves), label="setting")
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = data.draw(_JSONISH, label="value")
    _load(folder, yaml.safe_dump(config).encode())
