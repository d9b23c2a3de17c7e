"""Build caches: a candidate verified again with the same source skips its CUDA and Triton builds.

A job's compile artifacts live in its private directory (``torch_extensions/`` for
``load_inline``, ``triton_cache/`` for Triton; ``sandbox._process.child_env`` points the child
there). The cache keeps them between jobs, keyed by :func:`key`: sha256 of the candidate's full
source and the toolchain (torch, CUDA, nvcc, C++ compiler, arch list or device capability,
Python, Triton, device kind). A candidate can therefore only ever reach entries of its own
source.

The shared cache is never handed to a candidate: before the job the parent copies the entry
*in* (:meth:`JobCache.restore`), checking every file against the manifest the parent wrote
(an entry that does not match is dropped); after a job that ended without a harness fault and
was not rejected, the parent copies the artifacts *out* (:meth:`JobCache.save`: regular files
only, written to a temporary directory and renamed into place), then evicts least recently
used entries above :data:`MAX_BYTES`.

Why the job directory is stable per key: torch's JIT build writes ``build.ninja`` with the
absolute path of the extension's build directory, and ninja rebuilds when a command line
changes, so a build restored under another path compiles again. A job with a cache key
therefore runs in ``<private root>/<key>`` (a 0700 root on ``/dev/shm`` or the temp dir), held
by an exclusive file lock: a second job of the same source at the same time gets an ordinary
fresh directory (it still restores, it saves nothing). Triton's cache is content-addressed and
works under any path.

Limits: candidates run as the same uid as the parent, so a candidate that sets out to do so
can read the manifest key and rewrite another source's entry; the manifest stops accidental
and naive tampering, not that. A backend with its own uid or filesystem namespace closes it.

A build that failed ahead of its verification (:mod:`sandbox.prebuild`, on CPU cores) in a way
the GPU would not change is handed to the verification that follows as a signed record,
``<key>.failed``, taken once (:meth:`JobCache.note_failure`, :meth:`JobCache.take_failure`):
the verification reports the compiler's errors without building again under the device's
hold.

Location ``$KBENCH_CACHE_DIR/builds`` (default ``~/.cache/kbench/builds``); set
``KBENCH_BUILD_CACHE=0`` (or ``KBENCH_CACHE_DIR=off``) to turn it off.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import hmac
import json
import logging
import os
import platform
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox._cachedir import OFF, cache_base, cache_off

__all__ = ["FAILURE_TTL_S", "MAX_BYTES", "PARTS", "JobCache", "Restored", "cache_root", "enabled",
           "evict", "key", "open_job", "restore", "save", "toolchain"]

log = logging.getLogger(__name__)

_FORMAT = 1
PARTS = ("torch_extensions", "triton_cache")  # the job's subdirectories that are kept
MAX_BYTES = 4 << 30  # the whole cache; least recently used entries go first
_ENTRY_MAX_BYTES = 1 << 30  # one entry larger than this is not kept
_STALE_S = 3600.0  # temporary directories of an interrupted save older than this are removed
# A failed build handed from sandbox.prebuild to the verification that follows it is honoured
# this long (the verification is usually queued behind it for seconds to minutes).
FAILURE_TTL_S = 3600.0


# ---------------------------------------------------------------------------------------
# Where, and whether
# ---------------------------------------------------------------------------------------
def enabled() -> bool:
    return os.environ.get("KBENCH_BUILD_CACHE", "1").strip().lower() not in OFF and not cache_off()


def cache_root() -> Path:
    return cache_base() / "builds"


# ---------------------------------------------------------------------------------------
# The key
# ---------------------------------------------------------------------------------------
def _version_line(cmd: list[str]) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def _compilers() -> dict[str, str | None]:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = (str(Path(cuda_home) / "bin" / "nvcc") if cuda_home else None) or shutil.which("nvcc")
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    return {"nvcc": _version_line([nvcc, "--version"]) if nvcc else None,
            "cxx": _version_line([cxx, "--version"]) if cxx else None}


@functools.lru_cache(maxsize=8)
def _device_facts(device: str) -> dict[str, Any]:
    import torch

    try:
        import triton

        triton_version: str | None = triton.__version__
    except ImportError:
        triton_version = None
    facts: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                             "triton": triton_version, "capability": None}
    if device.startswith("cuda") and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(torch.device(device).index or 0)
        facts["capability"] = f"{major}.{minor}"
    return facts


def toolchain(device: str, capability: str | None = None) -> dict[str, Any]:
    """Everything besides the source that a build's output depends on. ``capability``: the
    target GPU's CUDA capability (``"9.0"``) where this process cannot see it (a build on
    CPU cores for a GPU of the same machine), else the visible device's."""
    facts = _device_facts(device)
    if capability and device.startswith("cuda"):
        facts = {**facts, "capability": capability}
    return {
        "format": _FORMAT,
        "kind": "cuda" if device.startswith("cuda") else "cpu",
        **facts,
        **_compilers(),
        "arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST"),
        "cc": os.environ.get("CC"), "cxx_env": os.environ.get("CXX"),
        "python": f"{platform.python_implementation()} {platform.python_version()}"
                  f"{getattr(sys, 'abiflags', '')}",
    }


def key(source: str, backend: str, tools: dict[str, Any]) -> str:
    """sha256 of the full source, the backend and the toolchain (:func:`toolchain`)."""
    blob = json.dumps({"source": source, "backend": backend, "tools": tools}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# Copying files: regular files only, never through a link, hashing what is written
# ---------------------------------------------------------------------------------------
def _skip(rel: str) -> bool:
    parts = rel.split("/")
    # torch's FileBaton: a lock left by a killed build would make the next build wait forever.
    return parts[0] == "torch_extensions" and len(parts) == 3 and parts[2] == "lock"


def _files(top: Path) -> dict[str, os.stat_result]:
    """Regular files under ``top/<part>`` by path relative to ``top``; links are ignored."""
    out: dict[str, os.stat_result] = {}
    for part in PARTS:
        base = top / part
        if not base.is_dir() or base.is_symlink():
            continue
        for d, dirs, names in os.walk(base):
            dirs[:] = [x for x in dirs if not (Path(d) / x).is_symlink()]
            for n in names:
                p = Path(d) / n
                st = p.lstat()
                rel = p.relative_to(top).as_posix()
                if stat.S_ISREG(st.st_mode) and not _skip(rel):
                    out[rel] = st
    return out


def _copy(src: Path, dst: Path, mtime_ns: int, mode: int) -> tuple[str, int]:
    """Copy one regular file (never following a link); return its sha256 and size."""
    h = hashlib.sha256()
    size = 0
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(src))
        dst.parent.mkdir(parents=True, exist_ok=True)
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o755)
        try:
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
                size += len(chunk)
                os.write(out, chunk)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    os.utime(dst, ns=(mtime_ns, mtime_ns), follow_symlinks=False)  # ninja compares mtimes
    return h.hexdigest(), size


def _secret(root: Path) -> bytes:
    path = root / ".secret"
    if not path.exists():  # written whole, then linked into place: a reader never sees half
        fd, tmp = tempfile.mkstemp(prefix=".tmp-secret-", dir=root)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.close(fd)
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    data = path.read_bytes()
    if len(data) != 32:
        raise OSError(errno.EINVAL, "bad build cache secret", str(path))
    return data


def _sign(root: Path, body: str) -> str:
    return hmac.new(_secret(root), body.encode(), hashlib.sha256).hexdigest()


def _rmtree(path: Path) -> None:
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# restore / save / evict
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Restored:
    """What :func:`restore` copied into a job."""

    key: str
    files: int
    bytes: int


def restore(work: Path, k: str, root: Path | None = None) -> Restored | None:
    """Copy entry ``k`` into ``work`` (``work/torch_extensions``, ``work/triton_cache``).
    None if there is no entry; an entry whose files do not match its signed manifest is
    dropped (and nothing of it is left in ``work``)."""
    root = root or cache_root()
    entry = root / k
    if not entry.is_dir() or entry.is_symlink():
        return None
    try:
        raw = json.loads((entry / "manifest.json").read_text())
        body, mac = raw["body"], raw["mac"]
        if not hmac.compare_digest(_sign(root, body), mac):
            raise ValueError("manifest signature does not match")
        man = json.loads(body)
        if man.get("key") != k or man.get("format") != _FORMAT:
            raise ValueError("manifest is for another key")
        want: dict[str, list[Any]] = man["files"]
        have = _files(entry / "files")
        if set(have) != set(want):
            raise ValueError("the entry's files differ from its manifest")
        total = 0
        for rel, (digest, size, mtime_ns, mode) in sorted(want.items()):
            got, n = _copy(entry / "files" / rel, work / rel, int(mtime_ns), int(mode))
            if got != digest or n != size:
                raise ValueError(f"{rel} changed after it was saved")
            total += n
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("build cache: dropping entry %s: %s", k[:16], e)
        for part in PARTS:
            _rmtree(work / part)
        _rmtree(entry)
        return None
    try:
        os.utime(entry)  # recently used: evicted last
    except OSError:
        pass
    log.info("build cache: restored %d files (%d bytes) of entry %s", len(want), total, k[:16])
    return Restored(k, len(want), total)


def save(work: Path, k: str, root: Path | None = None,
         max_entry_bytes: int = _ENTRY_MAX_BYTES) -> bool:
    """Copy ``work``'s build artifacts out as entry ``k`` (atomically: a temporary directory
    renamed into place). False when there is nothing to keep or it is too large."""
    root = root or cache_root()
    found = _files(work)
    size = sum(st.st_size for st in found.values())
    if not found or size > max_entry_bytes:
        if found:
            log.info("build cache: entry %s not kept (%d bytes)", k[:16], size)
        return False
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        files: dict[str, list[Any]] = {}
        for rel, st in sorted(found.items()):
            digest, n = _copy(work / rel, tmp / "files" / rel, st.st_mtime_ns, st.st_mode)
            files[rel] = [digest, n, st.st_mtime_ns, st.st_mode & 0o755]
        body = json.dumps({"format": _FORMAT, "key": k, "files": files,
                           "bytes": sum(v[1] for v in files.values())}, sort_keys=True)
        (tmp / "manifest.json").write_text(json.dumps({"body": body, "mac": _sign(root, body)}))
        entry = root / k
        old = root / f".old-{secrets.token_hex(8)}"
        try:
            os.rename(entry, old)
        except FileNotFoundError:
            pass
        try:
            os.rename(tmp, entry)
        except OSError:  # another job saved the same key in between: keep theirs
            return False
        finally:
            _rmtree(old)
    except OSError as e:
        log.warning("build cache: could not save entry %s: %s", k[:16], e)
        return False
    finally:
        _rmtree(tmp)
    log.info("build cache: saved %d files (%d bytes) as entry %s", len(files), size, k[:16])
    return True


def _entry_bytes(entry: Path) -> int:
    try:
        return int(json.loads(json.loads((entry / "manifest.json").read_text())["body"])["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return sum(st.st_size for st in _files(entry / "files").values())


def evict(root: Path | None = None, max_bytes: int = MAX_BYTES) -> list[str]:
    """Remove least recently used entries (by the entry's mtime) until the cache holds at most
    ``max_bytes``; also leftovers of interrupted saves. Returns the keys removed."""
    root = root or cache_root()
    try:
        children = list(root.iterdir())
    except OSError:
        return []
    now = time.time()
    entries = []
    for p in children:
        try:
            st = p.lstat()
        except OSError:
            continue
        if p.name.startswith((".tmp-", ".old-")) or p.name.endswith(".failed"):
            if now - st.st_mtime > _STALE_S:  # failed-build records no one took, too
                _rmtree(p)
        elif stat.S_ISDIR(st.st_mode) and not p.name.startswith("."):
            entries.append((st.st_mtime, p, _entry_bytes(p)))
    total = sum(b for _, _, b in entries)
    gone = []
    for _, p, b in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        _rmtree(p)
        total -= b
        gone.append(p.name)
    if gone:
        log.info("build cache: evicted %d entries", len(gone))
    return gone


# ---------------------------------------------------------------------------------------
# One job's use of the cache
# ---------------------------------------------------------------------------------------
def _private(path: Path) -> bool:
    """``path`` is a real directory of ours that nobody else may enter."""
    st = path.lstat()
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
            and not st.st_mode & 0o077)


def _stamp(work: Path) -> dict[str, tuple[int, int]]:
    return {rel: (st.st_size, st.st_mtime_ns) for rel, st in _files(work).items()}


def _lease_root() -> Path:
    """``<tmp>/kbench-builds-<uid>``, 0700: where stable per-key job directories live (on
    ``/dev/shm`` when it has room, as ``sandbox._process.job_dir`` does)."""
    base = Path(tempfile.gettempdir())
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        st = os.statvfs(shm)
        if st.f_bavail * st.f_frsize > (8 << 30):
            base = shm
    path = base / f"kbench-builds-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    if not _private(path):
        raise OSError(errno.EPERM, "not a private directory", str(path))
    return path


class JobCache:
    """The build cache as one verification uses it::

        jc = open_job(source, backend, device)
        work = jc.workdir() or backend.workdir()
        jc.restore(work)      # before the child starts
        ...                   # the job
        jc.save(work)         # only when it ended without a harness fault, not rejected
        jc.release()          # after the job directory is removed
    """

    def __init__(self, k: str, root: Path, stable_dir: bool = True) -> None:
        self.key = k
        self.root = root
        self.restored: Restored | None = None
        self._stamp: dict[str, tuple[int, int]] | None = None
        self._lock_fd: int | None = None
        self._dir: Path | None = None
        if stable_dir:
            self._lease()

    def _lease(self) -> None:
        try:
            lroot = _lease_root()
            fd = os.open(lroot / f"{self.key[:32]}.lock",
                         os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            log.info("build cache: no stable job directory (%s)", e)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # the same source is being verified now: it keeps the directory
            os.close(fd)
            return
        path = lroot / self.key[:32]
        try:
            _rmtree(path)
            path.mkdir(mode=0o700)
            if not _private(path):
                raise OSError(errno.EPERM, "not a private directory", str(path))
        except OSError as e:
            log.info("build cache: no stable job directory (%s)", e)
            os.close(fd)
            return
        self._lock_fd, self._dir = fd, path

    def workdir(self) -> Path | None:
        """This job's directory, stable per key, or None when another job holds it (or it
        could not be made): then the caller uses a fresh one and nothing is saved."""
        return self._dir

    def restore(self, work: Path) -> Restored | None:
        try:  # the cache never fails a verification
            self.restored = restore(work, self.key, self.root)
            if self.restored:
                self._stamp = _stamp(work)
        except OSError as e:
            log.warning("build cache: could not restore entry %s: %s", self.key[:16], e)
        return self.restored

    def save(self, work: Path) -> bool:
        """Keep ``work``'s artifacts (True if an entry was written)."""
        if self._dir is None or work != self._dir:
            return False  # built under another path: ninja would rebuild it anyway
        if self._stamp is not None and _stamp(work) == self._stamp:
            return False  # nothing was rebuilt: the entry already holds these files
        try:  # the cache never fails a verification
            kept = save(work, self.key, self.root)
            if kept:
                evict(self.root)
        except OSError as e:
            log.warning("build cache: could not save entry %s: %s", self.key[:16], e)
            return False
        return kept

    def note_failure(self, message: str, arch: str) -> bool:
        """Hand a failed build to the verification of the same source that follows: a signed
        record (``<key>.failed``) that :meth:`take_failure` consumes. Only for a build that
        fails the same on the GPU's node (:func:`sandbox.prebuild.prebuild` decides)."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            body = json.dumps({"format": _FORMAT, "key": self.key, "message": message,
                               "arch": arch, "at": time.time()}, sort_keys=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-failed-", dir=self.root)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps({"body": body, "mac": _sign(self.root, body)}))
            os.replace(tmp, self.root / f"{self.key}.failed")
        except OSError as e:
            log.warning("build cache: could not note the failed build %s: %s", self.key[:16], e)
            return False
        return True

    def take_failure(self) -> dict[str, Any] | None:
        """The failed build :meth:`note_failure` handed over for this source, if one was,
        within the last :data:`FAILURE_TTL_S`; taken once (the record is removed), so a later
        verification of the same source builds again. None for a record that is missing,
        old, or not signed by this cache."""
        path = self.root / f"{self.key}.failed"
        claimed = self.root / f".tmp-taken-{secrets.token_hex(8)}"
        try:
            os.rename(path, claimed)  # one taker only
        except OSError:
            return None
        try:
            raw = json.loads(claimed.read_text())
            body, mac = raw["body"], raw["mac"]
            if not hmac.compare_digest(_sign(self.root, body), mac):
                raise ValueError("signature does not match")
            rec = json.loads(body)
            if rec.get("key") != self.key or rec.get("format") != _FORMAT:
                raise ValueError("the record is for another key")
            if not 0 <= time.time() - float(rec["at"]) <= FAILURE_TTL_S:
                return None
            return {"message": str(rec["message"]), "arch": str(rec["arch"]),
                    "age_s": time.time() - float(rec["at"])}
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("build cache: dropping failed-build record %s: %s", self.key[:16], e)
            return None
        finally:
            claimed.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the stable directory, then let the next job of this source have it."""
        if self._dir is not None:
            _rmtree(self._dir)
            self._dir = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def open_job(source: str, backend: str, device: str, *, stable_dir: bool = True,
             capability: str | None = None) -> JobCache | None:
    """The cache for one job of ``source``, or None when the cache is off (``capability``:
    see :func:`toolchain`)."""
    if not enabled():
        return None
    return JobCache(key(source, backend, toolchain(device, capability)), cache_root(),
                    stable_dir)
