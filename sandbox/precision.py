"""Precision parity: the numeric settings every child (candidate, eager, compile) runs under.

The parent decides them (PyTorch's defaults unless the problem declares
``KBENCH["precision"]``), writes them in ``job.json``; the child applies them before any
candidate code runs and reports what is in effect after the candidate's import, after its
trials and after its timing. A candidate that changes them — ``allow_tf32`` turned on for
speed — is rejected, and the baselines are measured under the same settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["DEFAULTS", "PrecisionMeta", "apply", "read", "changed"]

# PyTorch's own defaults: fp32 matmuls in full precision, cuDNN convolutions allowed TF32.
DEFAULTS: dict[str, Any] = {
    "float32_matmul_precision": "highest",
    "allow_tf32": False,  # torch.backends.cuda.matmul.allow_tf32; follows the line above
    "cudnn_allow_tf32": True,
    "allow_fp16_reduced_precision_reduction": True,
    "allow_bf16_reduced_precision_reduction": True,
    "cudnn_benchmark": False,
    "cudnn_deterministic": False,
    "deterministic_algorithms": False,
}


class PrecisionMeta(BaseModel):
    """``KBENCH["precision"]``: the precision a candidate (and the baselines) may use.
    ``allow_tf32`` is torch's alias of ``float32_matmul_precision != "highest"``; give either,
    or both when they agree."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    float32_matmul_precision: Literal["highest", "high", "medium"] | None = None
    allow_tf32: bool | None = None
    cudnn_allow_tf32: bool = True
    allow_fp16_reduced_precision_reduction: bool = True
    allow_bf16_reduced_precision_reduction: bool = True
    cudnn_benchmark: bool = False
    cudnn_deterministic: bool = False
    deterministic_algorithms: bool = False

    @model_validator(mode="after")
    def _tf32_agrees(self) -> PrecisionMeta:
        p, t = self.float32_matmul_precision, self.allow_tf32
        if p is not None and t is not None and t != (p != "highest"):
            raise ValueError(f"allow_tf32={t} contradicts float32_matmul_precision={p!r} "
                             "(allow_tf32 is True exactly when the precision is not 'highest')")
        return self

    def settings(self) -> dict[str, Any]:
        """The full settings, in the form ``job.json`` and the verdict carry."""
        d = self.model_dump()
        prec = d["float32_matmul_precision"] or ("high" if d["allow_tf32"] else "highest")
        d["float32_matmul_precision"] = prec
        d["allow_tf32"] = prec != "highest"
        return {k: d[k] for k in DEFAULTS}


def apply(settings: dict[str, Any] | None) -> None:
    """Put ``settings`` (missing keys: :data:`DEFAULTS`) into effect in this process."""
    import torch

    s = {**DEFAULTS, **(settings or {})}
    torch.set_float32_matmul_precision(s["float32_matmul_precision"])  # sets allow_tf32 too
    m = torch.backends.cuda.matmul
    m.allow_fp16_reduced_precision_reduction = bool(s["allow_fp16_reduced_precision_reduction"])
    m.allow_bf16_reduced_precision_reduction = bool(s["allow_bf16_reduced_precision_reduction"])
    torch.backends.cudnn.allow_tf32 = bool(s["cudnn_allow_tf32"])
    torch.backends.cudnn.benchmark = bool(s["cudnn_benchmark"])
    torch.backends.cudnn.deterministic = bool(s["cudnn_deterministic"])
    torch.use_deterministic_algorithms(bool(s["deterministic_algorithms"]))


def read() -> dict[str, Any]:
    """The settings in effect in this process now."""
    import torch

    m = torch.backends.cuda.matmul
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "allow_tf32": bool(m.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "allow_fp16_reduced_precision_reduction": bool(m.allow_fp16_reduced_precision_reduction),
        "allow_bf16_reduced_precision_reduction": bool(m.allow_bf16_reduced_precision_reduction),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
    }


def changed(expected: dict[str, Any], now: dict[str, Any]) -> str | None:
    """``"allow_tf32 False -> True, ..."`` for every setting that differs, or None."""
    diffs = [f"{k} {expected.get(k)!r} -> {now.get(k)!r}" if isinstance(now.get(k), str)
             else f"{k} {expected.get(k)} -> {now.get(k)}"
             for k in DEFAULTS if expected.get(k) != now.get(k)]
    diffs.sort(key=lambda d: not d.startswith("allow_tf32 "))  # the usual culprit first
    return ", ".join(diffs) or None
