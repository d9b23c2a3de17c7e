"""KernelBench's own 250 problem files, as they are: each loads, and each reference runs on
its derived CPU shape within the CPU budget (1 GFLOP, 200 MB) -- or says why it cannot.

The derived CPU shapes keep what the references depend on: channels divisible by groups,
embedding sizes by heads, tuple and list constants shrunk with the scalars. ``.cuda()`` in a
KernelBench few-shot ``get_inputs`` works on a machine without a GPU, and ``kbench problems
show`` prints every shape with its FLOPs and bytes.

KernelBench's files are outside test data (``../shared/kernelbench`` or
``$KBENCH_KERNELBENCH_DIR``); the module is skipped when they are absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from kbench import cli
from kbench import problems as kp
from kbench.errors import ProblemError
from kbench.problems import CPU_BYTES_BUDGET, CPU_FLOPS_BUDGET, ProblemSpec, load_file

ROOT = Path(__file__).resolve().parents[1]
KB = Path(os.environ.get("KBENCH_KERNELBENCH_DIR") or ROOT.parent / "shared" / "kernelbench")

pytestmark = pytest.mark.skipif(not (KB / "level1").is_dir(),
                                reason=f"KernelBench's problem files are not at {KB} "
                                       "(set KBENCH_KERNELBENCH_DIR)")

FILES = sorted(KB.glob("level[123]/*.py")) if KB.is_dir() else []
IDS = [f"{p.parent.name}/{p.stem}" for p in FILES]
by_file = pytest.mark.parametrize("path", FILES, ids=IDS)

# Problems whose reference needs more than the CPU budget at every shape it accepts: the
# architecture fixes the cost (VGG / AlexNet: a classifier sized for 224x224 inputs; Swin:
# an image size built into the model), and only the batch and class count are constants.
NO_CPU_SHAPE = {
    "level3/11_VGG16", "level3/12_VGG19", "level3/5_AlexNet",
    "level3/29_SwinMLP", "level3/30_SwinTransformerV2",
}


@pytest.fixture(scope="module", autouse=True)
def _fresh_shape_cache(tmp_path_factory: pytest.TempPathFactory):
    """Derive every CPU shape here rather than read one cached by an older kbench."""
    saved = os.environ.get("KBENCH_CACHE_DIR")
    os.environ["KBENCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("kbench-cache"))
    yield
    if saved is None:
        os.environ.pop("KBENCH_CACHE_DIR", None)
    else:
        os.environ["KBENCH_CACHE_DIR"] = saved


_SPECS: dict[Path, ProblemSpec] = {}


def _spec(path: Path) -> ProblemSpec:
    if path not in _SPECS:
        try:
            _SPECS[path] = load_file(path)
        except ProblemError as e:
            missing = re.search(r"No module named '([\w.]+)'", str(e))
            if missing and importlib.util.find_spec(missing[1].split(".")[0]) is None:
                pytest.skip(f"{path.name} imports {missing[1]}, which is not installed")
            raise
    return _SPECS[path]


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _kb(pattern: str) -> Path:
    found = sorted(KB.glob(pattern))
    assert len(found) == 1, f"{pattern}: {found}"
    return found[0]


# ---------------------------------------------------------------------------------------
# Every file
# ---------------------------------------------------------------------------------------
def test_the_suite_is_complete():
    per_level = {lvl: len(list((KB / lvl).glob("*.py"))) for lvl in ("level1", "level2", "level3")}
    assert per_level == {"level1": 100, "level2": 100, "level3": 50}


@by_file
def test_loads(path):
    spec = _spec(path)
    assert spec.constants, "module-level shape constants are read"
    assert not spec.meta.cpu_shapes, "KernelBench files declare no kbench metadata"


@pytest.mark.slow
@by_file
def test_reference_runs_on_its_derived_cpu_shape_within_budget(path):
    spec = _spec(path)
    shape = spec.cpu_shapes["small"]
    assert set(shape) == set(spec.constants)
    for k, v in spec.constants.items():
        assert type(shape[k]) is type(v), f"{k}: {type(v).__name__} became {type(shape[k])}"
    if spec.cpu_shape_error:
        assert _key(path) in NO_CPU_SHAPE, spec.cpu_shape_error
        assert "no CPU shape within" in spec.cpu_shape_error
        pytest.skip(f"{_key(path)} declares why: {spec.cpu_shape_error}")
    init = spec.make_init_inputs(shape, seed=0)
    model = spec.make_model(init, 0, "cpu", shape=shape)
    inputs = spec.make_inputs(shape, 1, "cpu")
    with torch.no_grad():
        out = model(*inputs)
    outs = out if isinstance(out, (tuple, list)) else [out]
    assert all(isinstance(t, torch.Tensor) for t in outs)
    flops, nbytes = spec.roofline(shape)
    assert flops is not None and nbytes is not None, "roofline unknown at the CPU shape"
    assert flops <= CPU_FLOPS_BUDGET, f"{flops / 1e9:.2f} GFLOP at {shape}"
    assert nbytes <= CPU_BYTES_BUDGET, f"{nbytes / 1e6:.0f} MB at {shape}"


# ---------------------------------------------------------------------------------------
# Divisibility and list / tuple constants kept
# ---------------------------------------------------------------------------------------
RELATIONS = {
    "level1/35_GroupNorm_*": ["features % num_groups == 0"],
    "level2/75_Gemm_GroupNorm_Min_BiasAdd*": [
        "out_features % num_groups == 0", "bias_shape[1] == out_features"],
    "level2/11_ConvTranspose2d_BatchNorm_Tanh_MaxPool_GroupNorm*": [
        "out_channels % num_groups == 0", "out_channels % groups == 0"],
    "level2/21_Conv2d_Add_Scale_Sigmoid_GroupNorm*": [
        "out_channels % num_groups == 0", "bias_shape == (out_channels, 1, 1)",
        "scale_shape == (out_channels, 1, 1)"],
    "level1/85_conv_depthwise_2D_asymmetric*": ["groups == in_channels == out_channels"],
    "level1/72_conv_transposed_3D*grouped_*": [
        "in_channels % groups == 0", "out_channels % groups == 0", "kernel_size == (3, 5, 7)"],
    "level1/75_conv_transposed_2D*grouped*": [
        "in_channels % groups == 0", "out_channels % groups == 0", "stride == (2, 3)"],
    "level3/25_ShuffleNetUnit*": ["input_channels % groups == 0", "out_channels % groups == 0",
                                  "(out_channels // 4) % groups == 0"],
    "level3/50_ReLUSelfAttention*": ["n_embd % n_head == 0", "max_seqlen >= 1"],
    "level3/43_MinGPTCausalAttention*": ["n_embd % n_head == 0", "seq_len <= max_seqlen"],
    "level3/44_MiniGPTBlock*": ["n_embd % n_head == 0", "seq_len <= max_seqlen"],
    "level3/31_VisionAttention*": ["embed_dim % num_heads == 0", "num_channels == embed_dim"],
    "level3/28_VisionTransformer*": ["image_size % patch_size == 0", "dim % heads == 0"],
    "level3/48_Mamba2ReturnY*": ["seq_length % block_len == 0"],
    "level1/95_CrossEntropyLoss*": ["input_shape == (num_classes,)"],
    "level3/3_DeepNarrowMLP*": ["len(hidden_layer_sizes) == 16",
                                "len(set(hidden_layer_sizes)) == 1"],
    "level3/27_RegNet*": ["len(block_widths) == stages"],
}


@pytest.mark.parametrize("pattern", sorted(RELATIONS))
def test_derived_cpu_shapes_keep_divisibility(pattern):
    path = _kb(pattern + ".py")
    spec = _spec(path)
    shape = spec.cpu_shapes["small"]
    assert spec.cpu_shape_error is None, spec.cpu_shape_error
    for rel in RELATIONS[pattern]:
        assert eval(rel, {}, dict(spec.constants)), f"{rel} does not hold in the file itself"
        assert eval(rel, {}, dict(shape)), f"{rel} broken by the CPU shape {shape}"
    shrunk = [k for k, v in shape.items() if v != spec.constants[k]]
    assert shrunk, "the CPU shape is smaller than the main one"


@pytest.mark.parametrize(("pattern", "name"), [
    ("level3/1_MLP.py", "layer_sizes"), ("level3/2_ShallowWideMLP.py", "hidden_layer_sizes"),
    ("level3/3_DeepNarrowMLP.py", "hidden_layer_sizes"), ("level3/27_RegNet.py", "block_widths"),
    ("level1/94_MSELoss.py", "input_shape"), ("level3/23_EfficientNetB1.py", "input_shape"),
])
def test_list_and_tuple_constants_are_shrunk(pattern, name):
    spec = _spec(_kb(pattern))
    main, small = spec.constants[name], spec.cpu_shapes["small"][name]
    assert type(small) is type(main) and len(small) == len(main)
    assert max(small) <= 64 < max(main)
    assert all(s <= m for s, m in zip(small, main))


def test_level3_mlp_list_arguments_are_shrunk():
    spec = _spec(_kb("level3/1_MLP.py"))
    main_flops, _ = spec.roofline(spec.shapes["main"])
    flops, nbytes = spec.roofline(spec.cpu_shapes["small"])
    assert main_flops is not None and main_flops > 1e11
    assert flops is not None and flops < 1e7 and nbytes is not None and nbytes < 1e6


def test_no_cpu_shape_says_why():
    spec = _spec(_kb("level3/11_VGG16.py"))
    reason = spec.cpu_shape_error
    assert reason and "GFLOP" in reason and "batch_size=1" in reason
    assert spec.cpu_shapes["small"]["batch_size"] == 1, "the closest shape is still given"


# ---------------------------------------------------------------------------------------
# .cuda() in get_inputs (KernelBench's few-shot style) on a machine without a GPU
# ---------------------------------------------------------------------------------------
FEW_SHOT = '''
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self, scale) -> None:
        super().__init__()
        self.scale = nn.Parameter(scale)

    def forward(self, a, b):
        return (a + b) * self.scale


n = 128
kernel_size = (3, 5)


def get_inputs():
    a = torch.randn(1, n).cuda()
    b = torch.randn(1, n).cuda()
    return [a, b]


def get_init_inputs():
    return [torch.ones(n).cuda()]
'''


def test_cuda_calls_in_get_inputs_work_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = torch.Tensor.cuda, torch.nn.Module.cuda
    p = tmp_path / "1_few_shot_add.py"
    p.write_text(textwrap.dedent(FEW_SHOT))
    spec = load_file(p)
    shape = spec.cpu_shapes["small"]
    assert spec.cpu_shape_error is None, spec.cpu_shape_error
    init = spec.make_init_inputs(shape, seed=0)
    model = spec.make_model(init, 0, "cpu", shape=shape)
    a, b = spec.make_inputs(shape, 1, "cpu")
    assert a.device.type == "cpu" and a.shape == (1, shape["n"])
    assert torch.equal(model(a, b), a + b)
    meta = spec.make_inputs(shape, 1, "meta")
    assert all(x.device.type == "meta" for x in meta)
    assert (torch.Tensor.cuda, torch.nn.Module.cuda) == before, ".cuda() is restored"
    with pytest.raises((AssertionError, RuntimeError)):
        torch.randn(2).cuda()  # outside kbench's input making, .cuda() is itself again


def test_child_makes_the_same_inputs_and_restores_tuples(tmp_path):
    from sandbox import _child
    from sandbox._child import checksum

    p = tmp_path / "few_shot.py"
    p.write_text(textwrap.dedent(FEW_SHOT))
    spec = load_file(p)
    shape = {**spec.cpu_shapes["small"], "n": 37}
    params = json.loads(json.dumps(shape))  # as the child reads them from job.json
    assert params["kernel_size"] == [3, 5]
    prob = _child._load_module(p, "kbench_problem_test")
    xs = _child._make_inputs(prob, params, 7, "cpu")
    assert prob.kernel_size == (3, 5), "a tuple constant stays a tuple"
    assert checksum(xs) == checksum(spec.make_inputs(params, 7, "cpu"))
    with spec.at_shape(params) as m:
        assert m.kernel_size == (3, 5) and m.n == 37
    assert spec.module.kernel_size == (3, 5) and spec.module.n == 128


# ---------------------------------------------------------------------------------------
# kbench problems show / list
# ---------------------------------------------------------------------------------------
def _invoke(*args: str) -> str:
    r = CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return r.output


def test_problems_show_prints_every_shape_with_flops_and_bytes():
    path = _kb("level3/1_MLP.py")
    spec = _spec(path)
    text = _invoke("problems", "show", "--no-source", str(path))
    rows = {line.split()[0]: line for line in text.splitlines()
            if line.strip() and line.split()[0].startswith(("main", "small", "derived_"))}
    derived_gpu = kp.derive_shapes(spec, spec.shapes["main"])
    derived_cpu = kp.derive_shapes(spec, spec.cpu_shapes["small"])
    assert {"main", "small"} <= set(rows) and set(derived_gpu) <= set(rows)
    assert set(derived_cpu) <= set(rows)
    assert len([ln for ln in text.splitlines() if " gpu " in ln]) == 1 + len(derived_gpu)
    assert len([ln for ln in text.splitlines() if " cpu " in ln]) == 1 + len(derived_cpu)
    main_gflop, _ = spec.roofline(spec.shapes["main"])
    assert main_gflop is not None and f"{main_gflop / 1e9:.3g}" in rows["main"]
    assert "layer_sizes=[16384, 16384]" in rows["main"]
    assert "layer_sizes=[64, 64]" in rows["small"]
    for line in rows.values():  # GFLOP, MB and FLOP/B are numbers on every row
        cells = [c.strip() for c in line.split("│")]
        assert all(re.fullmatch(r"[0-9.e+-]+", c) for c in cells[2:5]), line


def test_problems_list_reports_problems_without_a_cpu_shape(tmp_path):
    for pattern in ("level3/11_VGG16.py", "level3/1_MLP.py"):
        shutil.copy(_kb(pattern), tmp_path)
    text = _invoke("problems", "list", str(tmp_path))
    assert re.search(r"no CPU shape.*11_VGG16.*GFLOP", text)
    assert "1_MLP:" not in text
    data = json.loads(_invoke("problems", "list", str(tmp_path), "--json"))
    errors = {p["id"]: p["cpu_shape_error"] for p in data["problems"]}
    assert errors["1_MLP"] is None and "GFLOP" in errors["11_VGG16"]
    shown = _invoke("problems", "show", "--no-source", str(tmp_path / "11_VGG16.py"))
    assert "no CPU shape within budget" in shown
