"""Where a model's parameters are drawn (sandbox._inputs.build_model): on the device when its
constructor runs there, else on the CPU, KernelBench's way; equal seeds give equal
parameters when both sides draw alike."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from sandbox._inputs import build_model  # noqa: E402


class Linear(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.fc = nn.Linear(n, n)


class CpuOnly(nn.Module):
    """A constructor that needs its tensors on the CPU (``.numpy()``)."""

    def __init__(self, n: int):
        super().__init__()
        self.fc = nn.Linear(n, n)
        self.register_buffer("scale", torch.tensor(torch.ones(n).numpy() * 2.0))


def test_on_the_cpu_device_it_is_drawn_on_the_cpu():
    m, on = build_model(Linear, [4], 7, "cpu")
    assert on == "cpu" and m.fc.weight.device.type == "cpu"


def test_a_gpu_device_draws_on_the_device():
    # The meta device stands in for a GPU: the constructor runs under it, nothing allocated.
    m, on = build_model(Linear, [4], 7, "meta")
    assert on == "device" and m.fc.weight.device.type == "meta"


def test_a_constructor_that_cannot_run_on_the_device_is_built_on_the_cpu():
    why: list[str] = []
    m, on = build_model(CpuOnly, [4], 7, "meta", why=why)
    assert on == "cpu"
    assert m.fc.weight.device.type == "meta"  # drawn on the CPU, then moved to the device
    # The device's error, in one line, for the verdict's note (the child's hand-over).
    assert len(why) == 1 and "\n" not in why[0] and why[0].split(":")[0].endswith("Error"), why
    why.clear()
    build_model(Linear, [4], 7, "meta", why=why)
    assert why == []  # built on the device: nothing to explain


def test_the_parents_choice_is_followed_and_equal_seeds_give_equal_parameters():
    a, on_a = build_model(Linear, [8], 123, "cpu", on="cpu")
    b, on_b = build_model(Linear, [8], 123, "cpu", on="cpu")
    c, _ = build_model(Linear, [8], 124, "cpu", on="cpu")
    assert on_a == on_b == "cpu"
    assert torch.equal(a.fc.weight, b.fc.weight)
    assert not torch.equal(a.fc.weight, c.fc.weight)
    # Told "cpu" by the parent, a child with a GPU still draws on the CPU.
    m, on = build_model(Linear, [8], 123, "meta", on="cpu")
    assert on == "cpu" and m.fc.weight.device.type == "meta"
