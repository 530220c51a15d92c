"""Fuzzing the loader, walker and pack reader: no input may crash them (NpowerError only)."""
from __future__ import annotations

import sys

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npower import NpowerError, zoo
from npower.features import extract
from npower.graph import load_graph
from npower.pack import pack_from_dict

from conftest import linear_pack

VALID = zoo.build("squeezenet", weights=False).SerializeToString()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def walk_all(data: bytes) -> None:
    try:
        for node in load_graph(data).nodes:
            extract(node)
    except NpowerError:
        return


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes(data):
    walk_all(data)


@FAST
@given(st.integers(min_value=0, max_value=len(VALID)))
def test_truncated_model(cut):
    walk_all(VALID[:cut])


@FAST
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_bytes(flips):
    data = bytearray(VALID)
    for position, value in flips:
        data[position] = value
    walk_all(bytes(data))


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@FAST
@given(yaml_values)
def test_random_pack_documents(document):
    try:
        pack_from_dict(document)
    except NpowerError:
        pass


@FAST
@given(st.sampled_from(["models", "device", "runtime", "name", "schema_version"]), yaml_values)
def test_pack_with_one_field_replaced(field, value):
    data = linear_pack().to_dict()
    data[field] = value
    try:
        pack_from_dict(yaml.safe_load(yaml.safe_dump(data)))
    except NpowerError:
        pass



def load_fuzzer():
    """benchmarks/fuzz.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz.py"
    spec = importlib.util.spec_from_file_location("npower_fuzz", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_fuzz_harness_finds_no_failures_in_200_seeded_cases():
    """The in-repo fuzzer: 50 cases per family, run in a worker process under a memory cap (a few seconds)."""
    fuzz = load_fuzzer()
    tallies = fuzz.run_fuzz(list(fuzz.FAMILIES), 200, seed=15, timeout=20.0)
    assert sum(t.cases for t in tallies.values()) == 200
    failures = {family: t.signatures for family, t in tallies.items() if t.failures}
    assert not failures, failures


def test_fuzz_checker_counts_tracebacks_dumps_and_bad_numbers(monkeypatch):
    import npower.cli
    fuzz = load_fuzzer()
    assert fuzz._bad_numbers({"a": [1.0, {"ms": float("nan")}]}) == ".a[1].ms=nan"
    assert fuzz._bad_numbers({"ms": -1}) == ".ms=-1"
    assert fuzz.check_case(["analyze"])[0] is None  # one line, exit 2: a pass

    def boom(args):
        raise ValueError("bug")
    monkeypatch.setattr(npower.cli, "cmd_frontends", boom)
    signature = fuzz.check_case(["frontends"])[0]
    assert signature.startswith("traceback ValueError in npower/cli.py") and signature.endswith("boom")
