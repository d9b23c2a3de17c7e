"""Build a CUDA candidate's extensions ahead of its GPU verification, on CPU cores only.

A CUDA candidate compiles its ``load_inline`` extensions when it is imported, which takes
tens of seconds of nvcc and none of the GPU. :func:`prebuild` imports the candidate in a
sandboxed child that sees no GPU (``CUDA_VISIBLE_DEVICES=""``) with the target's
``TORCH_CUDA_ARCH_LIST``, in the directory the build cache keeps stable for this source and
device (:mod:`sandbox.buildcache`), and keeps what it built. The GPU verification of the same
source then restores the build and ninja has nothing to do, so a run can build the next
candidates while the GPU checks and times the current one.

Nothing here decides a verdict: a candidate whose import fails without a GPU (module-level
CUDA calls) is still built as far as it got, and its verification reports any fault.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass

from sandbox import buildcache
from sandbox._process import ChildError
from sandbox.backends import Backend, default_backend
from sandbox.policy import check_source

__all__ = ["Prebuilt", "prebuild", "target_arch"]

log = logging.getLogger("kbench.sandbox")


@dataclass(frozen=True)
class Prebuilt:
    """What :func:`prebuild` did: ``state`` is ``built`` (an entry was saved), ``cached``
    (the cache already held this build), or ``skipped`` (with ``why``)."""

    state: str
    why: str = ""
    wall_s: float = 0.0


def target_arch(device: str, capability: str | None = None) -> str | None:
    """The ``TORCH_CUDA_ARCH_LIST`` a build for ``device`` gets: the environment's, else what
    torch derives from the visible card (its capability, ``+PTX``; ``capability`` names it
    where no card is visible), so that the flags — and so ninja's view of the build — are
    the ones the GPU verification will use."""
    import os

    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env:
        return env
    cap = buildcache.toolchain(device, capability).get("capability")
    return f"{cap}+PTX" if cap else None


def prebuild(source: str, device: str, *, isolation: Backend | None = None,
             timeout_s: float = 900.0, static_policy: bool = True,
             capability: str | None = None) -> Prebuilt:
    """Build ``source``'s CUDA extensions for ``device`` into the build cache, without a GPU.

    Skipped for a Triton candidate (it compiles at its first launch, on the GPU), for one the
    static policy refuses, when the cache is off, when the same source is being verified now,
    and when the target's architecture is unknown (no GPU visible here, no
    ``TORCH_CUDA_ARCH_LIST``). ``static_policy=False`` (tests) builds what the policy
    refuses, as :func:`sandbox.verify`'s option of the same name checks it. ``capability``:
    the target GPU's CUDA capability where this process sees no GPU (a Ray task holding
    none), so that the build lands under the key its verification on that GPU looks up.
    """
    t0 = time.monotonic()
    policy = check_source(source)
    if policy.backend != "cuda":
        return Prebuilt("skipped", "not a CUDA candidate")
    if not policy.ok and static_policy:
        return Prebuilt("skipped", "refused by the static policy")
    arch = target_arch(device, capability)
    if not arch:
        return Prebuilt("skipped", "the target's CUDA architecture is unknown here")
    jc = buildcache.open_job(source, "cuda", device, capability=capability)
    if jc is None:
        return Prebuilt("skipped", "the build cache is off")
    work = jc.workdir()
    if work is None:
        jc.release()
        return Prebuilt("skipped", "the same source is being built or verified now")
    try:
        (work / "candidate.py").write_text(source)
        if jc.restore(work):  # built before: ninja would find nothing to do
            return Prebuilt("cached", "", time.monotonic() - t0)
        (work / "job.json").write_text(json.dumps({
            "mode": "build", "device": "cpu", "candidate": "candidate.py", "arch": arch,
            "cpu_seconds": int(timeout_s)}))
        isolation = isolation or default_backend()
        reason = ""
        with isolation.start(work, "cpu") as child:
            deadline = time.monotonic() + timeout_s
            try:
                while True:
                    msg = child.recv(deadline)
                    if msg is None or msg.get("event") in ("imported", "error"):
                        if msg and msg.get("event") == "error":
                            reason = str(msg.get("message", ""))[-300:]
                        break
            except ChildError as e:
                reason = str(e)
            child.finish()
        if reason:
            log.info("prebuild: the candidate's import stopped without a GPU: %s", reason)
        if jc.save(work):
            return Prebuilt("built", "", time.monotonic() - t0)
        return Prebuilt("skipped", reason or "nothing was built", time.monotonic() - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        jc.release()
