"""The environment fingerprint baselines and device facts are cached under, and the measured
device facts (bandwidth, matmul peaks) that SOL% and the roofline check use."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shutil
import subprocess
from typing import Any

__all__ = ["fingerprint", "fingerprint_hash", "measure_device_facts", "DATASHEET"]

# Datasheet peaks (dense) used only when nothing was measured; the measured values win.
DATASHEET: dict[str, dict[str, float]] = {
    "H100": {"bandwidth_gbs": 3350.0, "bf16_tflops": 989.0, "fp16_tflops": 989.0,
             "tf32_tflops": 494.0, "fp32_tflops": 67.0, "fp8_tflops": 1979.0, "int8_tops": 1979.0},
    "H200": {"bandwidth_gbs": 4800.0, "bf16_tflops": 989.0, "fp16_tflops": 989.0,
             "tf32_tflops": 494.0, "fp32_tflops": 67.0, "fp8_tflops": 1979.0, "int8_tops": 1979.0},
}


def _driver() -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _triton_version() -> str | None:
    """Triton's version, from its installed metadata where it has one: importing Triton only
    to read it cost ``kbench eval``'s own process 0.4 s, and that process runs no kernel."""
    from importlib import metadata

    for dist in ("triton", "pytorch-triton", "pytorch-triton-rocm"):  # the same in every process
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:  # a Triton from a source tree, without metadata
        import triton
    except ImportError:
        return None
    return getattr(triton, "__version__", None)


@functools.lru_cache(maxsize=4)
def fingerprint(device: str = "cuda") -> dict[str, Any]:
    """What a timing depends on: GPU, driver, CUDA, torch, triton and Python versions, and
    the version of kbench's timing protocol (:data:`sandbox.timing.PROTOCOL`)."""
    import torch

    from sandbox.timing import PROTOCOL

    triton_version = _triton_version()

    fp: dict[str, Any] = {
        "device": "cuda" if device.startswith("cuda") else "cpu",
        "protocol": PROTOCOL,
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(idx)
        fp.update(
            gpu=props.name,
            sms=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            memory_gb=round(props.total_memory / 2**30, 1),
            l2_mb=round(getattr(props, "L2_cache_size", 0) / 2**20, 1),
            cuda=torch.version.cuda,
            driver=_driver(),
        )
    else:
        fp.update(cpu=platform.processor() or platform.machine())
    return fp


def fingerprint_hash(fp: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def _time_ms(fn: Any, reps: int = 10) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def measure_device_facts() -> dict[str, float]:
    """Measure the two ceilings on this GPU: copy bandwidth (bytes read + written) and
    matrix-product rates on random data, per dtype. Takes a few seconds."""
    import torch

    facts: dict[str, float] = {}
    n = 1 << 30  # 1 GiB copy
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = _time_ms(lambda: b.copy_(a))
    facts["bandwidth_gbs"] = 2 * n / (ms * 1e-3) / 1e9
    a = b = None  # free the 2 GiB before the matmuls
    size = 8192
    for name, dtype, tf32 in (("bf16_tflops", torch.bfloat16, False),
                              ("fp16_tflops", torch.float16, False),
                              ("tf32_tflops", torch.float32, True),
                              ("fp32_tflops", torch.float32, False)):
        m = size if dtype != torch.float32 or tf32 else 4096
        x = torch.randn(m, m, device="cuda", dtype=dtype)
        y = torch.randn(m, m, device="cuda", dtype=dtype)
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        try:
            ms = _time_ms(lambda x=x, y=y: x @ y)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = prev
        facts[name] = 2 * m**3 / (ms * 1e-3) / 1e12
        del x, y
    torch.cuda.empty_cache()
    return facts
