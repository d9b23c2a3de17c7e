"""The speed-of-light bound: measured device ceilings (cached per device fingerprint) and
the roofline time of a shape from its FLOPs and bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.fingerprint import DATASHEET, measure_device_facts

if TYPE_CHECKING:
    from sandbox.baselines import Cache
    from sandbox.devicelock import Hold

__all__ = ["roofline_ms"]


def _peaks(cache: Cache | None, fp: dict[str, Any], fph: str,
           guard: Hold | None = None) -> dict[str, Any]:
    """The device's measured ceilings: cached, else measured now (with ``guard`` held
    exclusively, so no other job's work runs meanwhile)."""
    rec = cache.get_device_facts(fph) if cache else None
    facts = rec.facts if rec is not None else None
    if facts is None:
        if guard is not None:
            guard.exclude()
        try:
            facts = measure_device_facts()
        finally:
            if guard is not None:
                guard.release()
        if cache:
            cache.put_device_facts(fph, fp, facts)
    return {**facts, "gpu": fp.get("gpu")}


def roofline_ms(flops: float | None, nbytes: float | None, dtype: str | None,
                facts: dict[str, Any]) -> float | None:
    """The speed-of-light time: max(FLOPs / peak rate for the dtype, bytes / bandwidth).

    Peaks are the larger of the measured ceiling and the datasheet's for a known GPU, so an
    honest kernel that beats cuBLAS or a plain copy never shows more than 100% SOL."""
    if flops is None or nbytes is None:
        return None
    sheet = next((v for k, v in DATASHEET.items() if k in str(facts.get("gpu", ""))), {})
    facts = {**facts, **{k: max(v, facts.get(k) or 0.0) for k, v in sheet.items()}}
    rate = {"bfloat16": "bf16_tflops", "float16": "fp16_tflops", "float32": "tf32_tflops",
            "float64": "fp32_tflops"}.get(dtype or "float32")
    peak = facts.get(rate) if rate else 2 * facts.get("bf16_tflops", 0.0)  # int8/fp8 paths
    t_flops = flops / (peak * 1e12) if peak else 0.0
    t_bytes = nbytes / (facts["bandwidth_gbs"] * 1e9) if facts.get("bandwidth_gbs") else 0.0
    t = max(t_flops, t_bytes) * 1e3
    return t if t > 0 else None

