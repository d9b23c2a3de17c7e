"""Memory caps of one verification child: host address space on CPU runs, and on a GPU the
caching allocator's per-process fraction plus a check of the device memory the child's
process holds after the run (through NVML, where ``pynvml`` is installed).

The child applies both before any candidate code runs (``sandbox._child``); the parent
decides the numbers (:func:`host_bytes`, ``Limits.gpu_memory_fraction``). A candidate that
allocates past its cap gets an out-of-memory error in its own process, which the verdict
reports as ``runtime_error: out of memory ...``; the device stays usable for the next job.

Example:
    >>> fraction_for(0.9, total_bytes=80 << 30, reserved_bytes=0)
    0.9
    >>> over_cap(used_bytes=75 << 30, total_bytes=80 << 30, fraction=0.5)[:24]
    'holds 75.0 GiB of device'
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["CONTEXT_SLACK", "apply_gpu_cap", "describe", "fraction_for", "host_bytes",
           "nvml_available", "over_cap", "process_device_bytes"]

# What a CUDA context, cuBLAS/cuDNN workspaces and Triton's modules take outside the caching
# allocator: a process may hold this much beyond its allocator cap without being refused.
CONTEXT_SLACK = 1 << 30


def host_bytes(limit: int = 0) -> int:
    """The address-space cap of a CPU child: ``limit`` if set, else half this machine's RAM
    (at least 4 GiB, so torch and Triton's interpreter load), so one runaway candidate
    meets ``MemoryError`` instead of the kernel's OOM killer taking another process."""
    if limit > 0:
        return int(limit)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0  # unknown here: no cap rather than a wrong one
    return max(4 << 30, ram // 2)


def fraction_for(fraction: float | None, total_bytes: int, reserved_bytes: int = 0) -> float | None:
    """The allocator fraction to apply: ``fraction`` of the device, less what is already
    reserved on it by this process (``reserved_bytes``); None when no cap is asked for.
    Raises ValueError for a fraction outside (0, 1]."""
    if fraction is None:
        return None
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"gpu_memory_fraction must be in (0, 1], got {fraction}")
    if total_bytes <= 0:
        return fraction
    return max(1e-3, min(fraction, 1.0 - reserved_bytes / total_bytes))


def apply_gpu_cap(cuda: Any, device_index: int, fraction: float | None) -> dict[str, Any]:
    """Cap the caching allocator of ``cuda`` (``torch.cuda``, or a fake with the same
    three functions) on ``device_index`` at ``fraction`` of the device's memory. Returns
    what was applied, for the verdict's record: ``{"fraction", "cap_bytes", "total_bytes"}``,
    or ``{"fraction": None}`` when no cap was asked for."""
    if fraction is None:
        return {"fraction": None}
    total = int(cuda.get_device_properties(device_index).total_memory)
    frac = fraction_for(fraction, total, int(cuda.memory_reserved(device_index)))
    assert frac is not None
    cuda.set_per_process_memory_fraction(frac, device_index)
    return {"fraction": frac, "cap_bytes": int(frac * total), "total_bytes": total}


def over_cap(used_bytes: int, total_bytes: int, fraction: float | None,
             slack: int = CONTEXT_SLACK) -> str | None:
    """A reason if a process holding ``used_bytes`` of device memory is past its cap
    (``fraction`` of ``total_bytes`` plus the context's ``slack``), else None."""
    if fraction is None or total_bytes <= 0:
        return None
    cap = fraction * total_bytes + slack
    if used_bytes <= cap:
        return None
    return (f"holds {used_bytes / 2**30:.1f} GiB of device memory, past its cap of "
            f"{fraction * total_bytes / 2**30:.1f} GiB ({fraction:.0%} of the device) plus "
            f"{slack / 2**30:.1f} GiB for the CUDA context: memory allocated outside PyTorch's "
            "allocator counts too")


def nvml_available() -> bool:
    try:
        import pynvml  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def process_device_bytes(device_index: int, pid: int | None = None, nvml: Any = None) -> int | None:
    """Device memory the process ``pid`` (default: this one) holds on ``device_index``,
    from NVML; None where NVML is unavailable or does not say."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[import-not-found,no-redef]
        except ImportError:
            return None
    pid = os.getpid() if pid is None else pid
    try:
        nvml.nvmlInit()
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(device_index)
            procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        finally:
            nvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML answer: the check is unavailable, not failed
        return None
    used = [p.usedGpuMemory for p in procs if p.pid == pid and p.usedGpuMemory is not None]
    return int(sum(used)) if used else None


def describe(gpu: bool, fraction: float | None, nvml: bool, host_limit: int = 0) -> tuple[str, str]:
    """``kbench doctor``'s row for the GPU-memory cap: (status, detail). ``enforced`` only
    when there is a GPU, a fraction is set and NVML can check the device memory each child
    holds; ``partly enforced`` when only the allocator's fraction applies."""
    host = host_bytes(host_limit)
    host_txt = (f"CPU children's address space capped at {host / 2**30:.1f} GiB (rlimit)"
                if host else "CPU children's address space: no cap (RAM size unknown)")
    if not gpu:
        return "unavailable", f"no GPU here; {host_txt}"
    if fraction is None:
        return "not enforced", "Limits.gpu_memory_fraction is None: no cap per candidate"
    check = ("the child's device memory checked from outside after its checks and its "
             "timing (NVML)" if nvml else "no check of device memory after the run: NVML "
             "(pip install 'kbench[gpu]') is not installed, so memory allocated outside "
             "PyTorch's allocator is not capped")
    detail = (f"caching allocator capped at {fraction:.0%} of the device per child (set "
              f"before the candidate's import); {check}")
    return ("enforced" if nvml else "partly enforced"), detail
