"""Making a problem's inputs and models from its (trusted) module: one implementation for
the parent (:class:`sandbox.problem.ProblemSpec`) and the child (``sandbox._child``).

Light on purpose: the child imports it before anything else, so it imports only the standard
library at import time (torch inside the functions).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

__all__ = ["GEN_LOCK", "Shape", "build_model", "cuda_to", "like", "make_init_inputs",
           "make_inputs", "seed_generators", "set_constants", "timed_seed"]

Shape = dict[str, Any]

# Making inputs sets module constants and seeds torch's global generator: one thread at a time,
# so concurrent verifications (the runner's worker threads) neither race nor lose determinism.
GEN_LOCK = threading.RLock()


@contextlib.contextmanager
def cuda_to(device: Any) -> Iterator[None]:
    """While a (trusted) problem file makes its inputs: ``.cuda()`` on a tensor or module, as
    KernelBench's few-shot files write it, places it on ``device`` instead, so the same file
    runs on a machine without a GPU. kbench places every input itself."""
    import torch

    saved = torch.Tensor.cuda, torch.nn.Module.cuda

    def place(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self.to(device)

    torch.Tensor.cuda = place  # type: ignore[method-assign]
    torch.nn.Module.cuda = place  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = saved  # type: ignore[method-assign]


def like(current: Any, v: Any) -> Any:
    """``v`` in the container type of ``current``: shapes travel as JSON, so a tuple
    constant comes back as a list and is turned back into a tuple here."""
    if isinstance(v, list) and isinstance(current, tuple):
        return tuple(v)
    if isinstance(v, tuple) and isinstance(current, list):
        return list(v)
    return v


def timed_seed(seeds: Sequence[int], call: int) -> int:
    """The input seed of timed call ``call`` (counted over a whole timing, warm-up and audits
    included): ``seeds[call]`` for the first ``len(seeds)`` calls (the parent's secret draws),
    then one derived from ``seeds[call % n]`` and the round ``call // n``. No input set is
    timed twice, however many calls a fast kernel's timing makes: a value-keyed cache of any
    size never hits. Parent and child derive alike; the parent checks an audited output's
    seed against the call it names. A derived seed is a 62-bit hash, so it meets a correctness
    seed with negligible probability (the parent refuses one that does)."""
    n = len(seeds)
    base, rnd = int(seeds[call % n]), call // n
    if rnd == 0:
        return base
    digest = hashlib.blake2b(f"{base}:{rnd}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2


def set_constants(module: ModuleType, values: Shape) -> None:
    """Set the module's constants to ``values`` (each in the container type it had)."""
    for k, v in values.items():
        setattr(module, k, like(getattr(module, k, None), v))


def seed_generators(seed: int) -> None:
    """``torch.manual_seed(seed)`` for the generators inputs and parameters draw from: the
    CPU's and every CUDA device's (queued until CUDA starts, as torch does). Without its
    calls into the xpu and mtia back ends, which format a stack trace each time: 0.9 ms a
    call on an H100 host, paid per timed sample (each draws fresh inputs), most of the
    host's time of a small kernel's timing."""
    import torch

    seed = int(seed)
    if not torch.cuda._is_in_bad_fork():
        torch.cuda.manual_seed_all(seed)
    torch.random.default_generator.manual_seed(seed)


def make_init_inputs(module: ModuleType, seed: int | None = None) -> list[Any]:
    """``get_init_inputs()`` at the module's current constants, on CPU, after ``seed``."""

    with cuda_to("cpu"):
        if seed is not None:
            seed_generators(seed)
        return list(module.get_init_inputs())


def make_inputs(module: ModuleType, seed: int, device: str) -> list[Any]:
    """``get_inputs()`` at the module's current constants after ``seed``, made on ``device``."""
    import torch

    with cuda_to(device):
        seed_generators(seed)
        with torch.device(device):
            inputs = list(module.get_inputs())
    return [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]


def build_model(cls: Any, init: list[Any], seed: int, device: str,
                on: str | None = None, why: list[str] | None = None) -> tuple[Any, str]:
    """``cls(*init)`` after ``seed``, on ``device``; returns the model and where its
    parameters were drawn: ``"device"`` or ``"cpu"``.

    KernelBench builds models on the CPU and moves them. kbench draws them on the device
    instead (``on="device"``, the default for a GPU): the same initialisers, so the same
    distributions, and a fresh seed per case either way; but CPU initialisation is one
    thread, 0.3-1.5 s per 60-100M-parameter model, paid per case by both sides of every
    verification. A constructor that fails there (CPU-only work in ``__init__``) is built
    on the CPU, KernelBench's way. Parent and child must draw alike for a candidate's
    parameters to equal the reference's: the child is given the parent's ``on``, and falls
    back to the CPU only when its own constructor fails on the device (``why``, when given,
    then receives that error in one line).
    """
    import torch

    if on is None:
        on = "cpu" if device == "cpu" else "device"
    if on == "device" and device != "cpu":
        try:
            with torch.device(device):
                seed_generators(seed)
                model = cls(*init)
            return model.to(device), "device"
        except Exception as e:  # noqa: BLE001 - CPU-only work in __init__: KernelBench's way below
            if why is not None:
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                why.append(f"{type(e).__name__}: {first}"[:300])
    seed_generators(seed)
    return cls(*init).to(device), "cpu"
