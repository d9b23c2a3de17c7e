"""Correctness cases beyond a problem's own input distribution, made alike in both processes.

KernelBench's ``get_inputs`` often draws ``torch.rand`` (every value >= 0), so a kernel that
copies its input passes ReLU; ``nn.LayerNorm`` starts with weight 1 and bias 0, so a kernel
that ignores them passes. Two kinds of case close that:

* **Perturbed inputs** (:func:`perturb_inputs`): every floating-point input is replaced by
  values of both signs: ``signed`` is ``randn`` scaled to the original's RMS (centred on
  zero), ``scaled`` also spreads magnitudes over about two orders (``exp(randn)``). An input
  whose domain is non-negative can be kept non-negative (``positive``) when the signed case
  leaves the reference without a finite output. Integer and boolean inputs (indices, masks,
  labels) are never touched.
* **Redrawn parameters** (:func:`redraw_constant_tensors`): the reference's floating-point
  parameters and buffers that hold one constant value (norm weights and biases, running
  statistics, zero-initialised biases) are redrawn; random ones already test that they are
  used. :func:`hand_over` gives the redrawn values to the candidate's ``ModelNew`` by name,
  else by order of shapes, else by shape, since models write ``ModelNew`` with other names.

Both processes call these functions with the same seeds (sent by the parent), so the values
agree bit for bit without crossing the process boundary. This module imports nothing of
kbench and runs in the sandbox child.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["INPUT_KINDS", "DOMAINS", "perturb_inputs", "redraw_constant_tensors",
           "float_tensors", "hand_over", "describe"]

INPUT_KINDS = ("signed", "scaled")
DOMAINS = ("auto", "signed", "positive", "none")

_WHAT = {
    "own": "the problem's own inputs",
    "signed": "inputs redrawn with both signs (randn at the original RMS)",
    "scaled": "inputs redrawn with both signs and magnitudes spread over two orders",
    "params": "the reference's constant parameters and buffers redrawn",
}


def describe(kind: str, positive: bool = False) -> str:
    """A short phrase for a case kind, as verdicts and ``problems show`` print it."""
    text = _WHAT.get(kind, kind)
    if positive:
        text = text.replace("with both signs", "kept non-negative")
    return text


def _generator(device: Any, seed: int) -> Any:
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _exp(z: Any) -> Any:
    """``z.exp_()``, the same bits in every process. On the CPU, torch's exp runs through a
    vector math library in parallel chunks (2,048 elements), and a worker thread of the
    sandbox's child once computed its chunks about 5e-5 off (every element past the first
    2,000 of 4,000): the child's inputs then differed from the verifier's, a harness error.
    numpy's exp runs in this thread only. A GPU's exp is the same everywhere."""
    if z.device.type != "cpu":
        return z.exp_()
    import numpy as np
    import torch

    return torch.from_numpy(np.exp(z.numpy())).to(z.dtype)


def perturb_inputs(xs: list[Any], kind: str, seed: int, positive: bool = False) -> list[Any]:
    """New inputs of the same shapes, dtypes, devices and strides with redrawn values.

    Args:
        xs: the problem's own inputs (left unchanged).
        kind: one of :data:`INPUT_KINDS`.
        seed: the case's seed; input ``i`` draws from ``seed + i``.
        positive: take absolute values for inputs whose original values were all >= 0.
    """
    import torch

    if kind not in INPUT_KINDS:
        raise ValueError(f"unknown perturbation {kind!r}; expected one of {INPUT_KINDS}")
    out: list[Any] = []
    for i, x in enumerate(xs):
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel() > 0):
            out.append(x)
            continue
        g = _generator(x.device, seed + i)
        x = x.detach()
        # in place where possible: an input can be gigabytes, and both processes do this
        rms = float(torch.linalg.vector_norm(x, dtype=torch.float32)) / math.sqrt(x.numel())
        if not (rms > 0.0 and rms < float("inf")):
            rms = 1.0
        y = torch.empty_like(x)  # keeps the original's strides
        v = y if y.dtype == torch.float32 else torch.empty(x.shape, device=x.device)
        v.normal_(generator=g).mul_(rms)
        if kind == "scaled":
            v.mul_(_exp(torch.empty_like(v).normal_(generator=g)))
        if positive and float(x.min()) >= 0.0:
            v.abs_()
        if v is not y:
            y.copy_(v)
        out.append(y)
    return out


def float_tensors(model: Any) -> list[tuple[str, Any]]:
    """A module's floating-point parameters, then its floating-point buffers, in order."""
    return _floats(model.named_parameters()) + _floats(model.named_buffers())


def _floats(items: Iterable[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [(n, t) for n, t in items if t.is_floating_point() and t.numel() > 0]


def _constant(t: Any) -> bool:
    flat = t.detach().reshape(-1)
    return bool((flat == flat[0]).all())


def redraw_constant_tensors(model: Any, seed: int) -> list[str]:
    """Redraw, in place, every floating-point parameter or buffer of ``model`` that holds a
    single value; return their names. A positive constant ``c`` becomes ``c * exp(0.5 z)``
    (sign kept, so variances stay valid), a negative one likewise, zero becomes ``0.5 z``."""
    import torch

    g = _generator("cpu", seed)
    names = []
    with torch.no_grad():
        for name, t in float_tensors(model):
            if not _constant(t):
                continue
            c = float(t.reshape(-1)[0])
            z = torch.randn(t.shape, generator=g, dtype=torch.float32)
            new = c * (0.5 * z).exp() if c != 0.0 else 0.5 * z
            t.copy_(new.to(t.device))
            names.append(name)
    return names


def _match_group(ref: list[tuple[str, Any]], cand: list[tuple[str, Any]],
                 out: dict[str, Any], used: set[int]) -> None:
    """Reference tensor name -> candidate tensor, into ``out``: by name and shape, then by the
    order of the remaining shapes when both sequences agree, then per shape when counts agree."""
    cand_by_name = dict(cand)
    for n, t in ref:
        c = cand_by_name.get(n)
        if n not in out and c is not None and c.shape == t.shape and id(c) not in used:
            out[n] = c
            used.add(id(c))
    rest_r = [(n, t) for n, t in ref if n not in out]
    rest_c = [(n, t) for n, t in cand if id(t) not in used]
    if not rest_r or not rest_c:
        return
    if [t.shape for _, t in rest_r] == [t.shape for _, t in rest_c]:
        pairs = list(zip((n for n, _ in rest_r), (c for _, c in rest_c)))
    else:
        pairs = []
        for shape in {t.shape for _, t in rest_r}:
            rs = [n for n, t in rest_r if t.shape == shape]
            cs = [c for _, c in rest_c if c.shape == shape]
            if len(rs) == len(cs):
                pairs += list(zip(rs, cs))
    for n, c in pairs:
        out[n] = c
        used.add(id(c))


def _match(ref_model: Any, cand_model: Any) -> dict[str, Any]:
    """Parameters against parameters, buffers against buffers, then what is left of either
    against what is left of either (a weight kept as a buffer, say)."""
    out: dict[str, Any] = {}
    used: set[int] = set()
    rp, rb = _floats(ref_model.named_parameters()), _floats(ref_model.named_buffers())
    cp, cb = _floats(cand_model.named_parameters()), _floats(cand_model.named_buffers())
    _match_group(rp, cp, out, used)
    _match_group(rb, cb, out, used)
    _match_group([(n, t) for n, t in rp + rb if n not in out],
                 [(n, t) for n, t in cp + cb if id(t) not in used], out, used)
    return out


def hand_over(ref_model: Any, cand_model: Any, names: Iterable[str]) -> list[str]:
    """Copy the reference's tensors ``names`` into the matching tensors of ``cand_model``;
    return the names that found no match (the candidate keeps its own values for those)."""
    import torch

    match = _match(ref_model, cand_model)
    ref_by_name = dict(float_tensors(ref_model))
    missing = []
    with torch.no_grad():
        for n in names:
            c = match.get(n)
            if c is None:
                missing.append(n)
            else:
                c.copy_(ref_by_name[n].to(device=c.device, dtype=c.dtype))
    return missing
