"""Build a CUDA candidate's extensions ahead of its GPU verification, on CPU cores only.

A CUDA candidate compiles its ``load_inline`` extensions when it is imported, which takes
tens of seconds of nvcc and none of the GPU. :func:`prebuild` imports the candidate in a
sandboxed child that sees no GPU (``CUDA_VISIBLE_DEVICES=""``) with the target's
``TORCH_CUDA_ARCH_LIST``, in the directory the build cache keeps stable for this source and
device (:mod:`sandbox.buildcache`), and keeps what it built. The GPU verification of the same
source then restores the build and ninja has nothing to do, so a run can build the next
candidates while the GPU checks and times the current one.

Nothing here decides a verdict: a candidate whose import fails without a GPU (module-level
CUDA calls) is still built as far as it got, and its verification reports any fault. One
outcome is handed on: a build that the compiler refused (its errors in torch's "Error
building extension" message), by a candidate that asked torch nothing about the GPU before
and did not read ``CUDA_VISIBLE_DEVICES`` (so the GPU's node would compile the same sources
with the same flags), is noted in the build cache
(:meth:`sandbox.buildcache.JobCache.note_failure`). The verification that follows
reports it as the compile error it is, instead of running the same nvcc build again while it
holds the device (other jobs cannot be timed meanwhile).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass

from sandbox import buildcache
from sandbox._process import ChildError
from sandbox.backends import Backend, default_backend
from sandbox.policy import check_source

__all__ = ["Prebuilt", "deterministic_failure", "prebuild", "target_arch"]

log = logging.getLogger("kbench.sandbox")


# A compiler's or linker's diagnostic in ninja's output: the sources, not the machine, failed.
_DIAGNOSTIC = re.compile(r"(\berror\b\s*:|: error\b|undefined reference to|"
                         r"ld returned \d+ exit status)", re.I)
# The machine failed the build: a compiler killed or out of room is not the candidate's error.
_MACHINE = re.compile(r"(\bKilled\b|Terminated|signal \d+|No space left|Cannot allocate|"
                      r"virtual memory exhausted|out of memory|internal compiler error|"
                      r"Segmentation fault)", re.I)


def deterministic_failure(msg: dict[str, object]) -> bool:
    """A build child's import error (``_child._build_only``'s message) that a build on the
    GPU's node would repeat: torch's extension build failed with a compiler or linker
    diagnostic, no sign that the machine killed or starved the compiler, and the candidate
    asked torch nothing about the GPU before and read no GPU-visibility variable (it sees none
    here, and could have built other sources or flags for one)."""
    text = str(msg.get("message", ""))
    return (msg.get("build_error") is True and not msg.get("asked")
            and bool(_DIAGNOSTIC.search(text)) and not _MACHINE.search(text))


@dataclass(frozen=True)
class Prebuilt:
    """What :func:`prebuild` did: ``state`` is ``built`` (an entry was saved), ``cached``
    (the cache already held this build), ``compile_error`` (the compiler refused the
    sources; handed to the verification, ``why`` its message's last line), or ``skipped``
    (with ``why``)."""

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
        reason, failed = "", None
        with isolation.start(work, "cpu") as child:
            deadline = time.monotonic() + timeout_s
            try:
                while True:
                    msg = child.recv(deadline)
                    if msg is None or msg.get("event") in ("imported", "error"):
                        if msg and msg.get("event") == "error":
                            reason = str(msg.get("message", ""))[-300:]
                            failed = msg if deterministic_failure(msg) else None
                        break
            except ChildError as e:
                reason, failed = str(e), None
            child.finish()
        if reason:
            log.info("prebuild: the candidate's import stopped without a GPU: %s", reason)
        saved = jc.save(work)  # what did build (other extensions, objects) is kept either way
        if failed is not None and jc.note_failure(str(failed["message"]), arch):
            last = reason.strip().splitlines()[-1:] or [""]
            return Prebuilt("compile_error", last[0][:200], time.monotonic() - t0)
        if saved:
            return Prebuilt("built", "", time.monotonic() - t0)
        return Prebuilt("skipped", reason or "nothing was built", time.monotonic() - t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        jc.release()
