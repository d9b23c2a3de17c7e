"""Problem loading: selectors, KBENCH metadata, malformed files, derived shapes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kbench.errors import ProblemError
from kbench.problems import SUITES, derive_shapes, load, load_file

KERNELBENCH_STYLE = '''
import torch
import torch.nn as nn

batch_size = 16
in_features = 4096
out_features = 1024


class Model(nn.Module):
    """A KernelBench-format file with no kbench metadata at all."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, x):
        return torch.relu(self.linear(x))


def get_inputs():
    return [torch.randn(batch_size, in_features)]


def get_init_inputs():
    return [in_features, out_features]
'''


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_every_suite_has_at_least_one_problem():
    for suite in SUITES:
        assert load(suite), f"suite {suite} is empty"


def test_selectors():
    relu = load("level1/relu")
    assert [s.key for s in relu] == ["level1/relu"]
    assert relu[0].suite == "level1"
    assert {s.key for s in load("level1/relu,level1/relu")} == {"level1/relu"}
    globbed = load("level1/re*")
    assert "level1/relu" in {s.key for s in globbed}
    assert all(s.key.startswith("level1/re") for s in globbed)
    everything = load("all")
    assert len(everything) >= len(SUITES)
    by_path = load(str(relu[0].path))
    assert by_path[0].source_hash == relu[0].source_hash


def test_unknown_selector_is_one_clear_error():
    with pytest.raises(ProblemError, match="no problem matches 'level1/nope'"):
        load("level1/nope")
    with pytest.raises(ProblemError, match="empty problem selector"):
        load(" , ")


def test_kernelbench_directory_loads_as_is(tmp_path):
    d = tmp_path / "KernelBench" / "level1"
    d.mkdir(parents=True)
    write(d, "1_Linear_ReLU.py", KERNELBENCH_STYLE)
    write(d, "2_Linear_ReLU_copy.py", KERNELBENCH_STYLE)
    specs = load(str(d))
    assert [s.name for s in specs] == ["1_Linear_ReLU", "2_Linear_ReLU_copy"]
    spec = specs[0]
    assert spec.constants == {"batch_size": 16, "in_features": 4096, "out_features": 1024}
    assert spec.shapes == {"main": spec.constants}
    small = spec.cpu_shapes["small"]
    assert small["in_features"] <= 64 and small["out_features"] <= 64
    # the reference runs on the derived CPU shape
    init = spec.make_init_inputs(small)
    model = spec.make_model(init, 0, "cpu")
    (x,) = spec.make_inputs(small, 1, "cpu")
    assert model(x).shape == (small["batch_size"], small["out_features"])
    flops, nbytes = spec.roofline(spec.shapes["main"])
    assert flops == 2 * 16 * 4096 * 1024  # torch's flop counter on the meta device
    assert nbytes >= 4 * (16 * 4096 + 4096 * 1024 + 16 * 1024)


def test_inputs_are_fresh_per_seed_and_reproducible():
    spec = load("level1/relu")[0]
    shape = spec.cpu_shapes["small"]
    a = spec.make_inputs(shape, 1, "cpu")[0]
    b = spec.make_inputs(shape, 1, "cpu")[0]
    c = spec.make_inputs(shape, 2, "cpu")[0]
    assert (a == b).all() and not (a == c).all()
    assert spec.constants["dim"] == 1 << 23, "at_shape restores the module constants"


@pytest.mark.parametrize("body, message", [
    ("import torch\n", "missing Model, get_inputs, get_init_inputs"),
    ("import torch\nclass Model:\n    pass\ndef get_inputs(): return []\n"
     "def get_init_inputs(): return []\n", "subclass of torch.nn.Module"),
    ("raise ImportError('no such thing')\n", "fails to import: ImportError: no such thing"),
    ("def broken(:\n", "fails to import: SyntaxError"),
])
def test_malformed_problem_names_file_and_fault(tmp_path, body, message):
    p = write(tmp_path, "bad.py", body)
    with pytest.raises(ProblemError) as e:
        load_file(p)
    assert str(p) in str(e.value) and message in str(e.value)


def test_kbench_metadata_is_validated(tmp_path):
    base = KERNELBENCH_STYLE
    p = write(tmp_path, "a.py", base + "\nKBENCH = {'dtyp': 'float32'}\n")
    with pytest.raises(ProblemError, match=r"KBENCH.dtyp: Extra inputs are not permitted"):
        load_file(p)
    p = write(tmp_path, "b.py", base + "\nKBENCH = {'dtype': 'float13'}\n")
    with pytest.raises(ProblemError, match="unknown dtype 'float13'"):
        load_file(p)
    p = write(tmp_path, "c.py", base + "\nKBENCH = {'shapes': {'big': {'nope': 3}}}\n")
    with pytest.raises(ProblemError, match=r"overrides \['nope'\]"):
        load_file(p)
    p = write(tmp_path, "d.py", base + "\nKBENCH = {'dtype': 'bfloat16', 'atol': 0.5,"
              " 'shapes': {'odd': {'batch_size': 7}}}\n")
    spec = load_file(p)
    assert spec.tolerance == (0.5, 2e-2)
    assert spec.shapes["odd"] == {"batch_size": 7, "in_features": 4096, "out_features": 1024}


def test_derived_shapes_perturb_sizes_but_not_fixed_constants(tmp_path):
    p = write(tmp_path, "a.py", KERNELBENCH_STYLE + "\nKBENCH = {'fixed': ['out_features']}\n")
    spec = load_file(p)
    derived = derive_shapes(spec, spec.constants)
    assert derived, "sizes are perturbed"
    assert all(d["out_features"] == 1024 for d in derived.values())
    assert any(d["batch_size"] == 1 for d in derived.values())
    assert any(d["in_features"] % 2 == 1 for d in derived.values())
    p = write(tmp_path, "b.py", KERNELBENCH_STYLE + "\nKBENCH = {'derive': False}\n")
    assert derive_shapes(load_file(p), spec.constants) == {}
