"""Build the Docker backend's default image from this machine's own interpreter.

``python -m sandbox.backends._docker_image [--tag NAME] [--dry-run]`` writes a root
filesystem holding only what the verification child needs — this interpreter (its binary,
``libpython`` and standard library), the installed distributions torch, Triton, numpy and
pydantic need (their requirements followed, extras not), and the shared libraries all of
their ELF files load (as ``ldd`` resolves them) — and imports it with ``docker import``
semantics (the SDK's ``import_image_from_file``). No registry is contacted, and the image's
torch is the host's by construction. Paths are kept as on the host, so ``sys.prefix`` is the
same inside.

Anything else (a CUDA toolkit for ``load_inline`` candidates, a compiler for Triton's
launcher on a GPU) is not included: name an image that has them in ``KBENCH_DOCKER_IMAGE``
(for instance one built ``FROM nvidia/cuda:<ver>-devel`` with ``pip install torch==<host's>
triton numpy pydantic``).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

__all__ = ["build", "host_files"]

_ROOTS = ("torch", "triton", "numpy", "pydantic")
_ELF = b"\x7fELF"


def _distributions(roots: tuple[str, ...] = _ROOTS) -> list[metadata.Distribution]:
    """``roots`` and everything they require (markers evaluated here, no extras)."""
    env = default_environment()
    env["extra"] = ""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement not installed here
        seen[name] = dist
        for r in dist.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate(env):
                todo.append(req.name)
    return list(seen.values())


def _is_elf(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == _ELF
    except OSError:
        return False


def _libraries(elves: list[Path]) -> set[Path]:
    """Every shared library ``ldd`` resolves for ``elves`` (the loader included)."""
    libs: set[Path] = set()
    for i in range(0, len(elves), 64):
        r = subprocess.run(["ldd", *map(str, elves[i:i + 64])], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:  # RPATHs of $ORIGIN/../.. give paths with ".." in them
                libs.add(Path(os.path.normpath(m.group(1))))
    return libs


def host_files() -> set[Path]:
    """The files the image is made of (directories are expanded)."""
    sp = sysconfig.get_paths()
    skip = {Path(sp["purelib"]), Path(sp["platlib"]), Path(sp["stdlib"]) / "test"}
    dirs = [Path(sp["stdlib"]), Path(sp["platstdlib"]) / "lib-dynload"]
    bindir = Path(sys.executable).parent
    v = sys.version_info  # python3 on PATH is what the backend runs
    files = {p for p in (Path(sys.executable), bindir / f"python{v.major}",
                         bindir / f"python{v.major}.{v.minor}") if p.exists()}
    for d in dirs:
        for dirpath, sub, names in os.walk(d):
            sub[:] = [s for s in sub if Path(dirpath, s) not in skip]
            files.update(Path(dirpath, n) for n in names)
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlib = sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlib and (Path(libdir) / ldlib).exists():
        files.add(Path(libdir) / ldlib)
    for dist in _distributions():
        for f in dist.files or []:
            p = Path(os.path.normpath(dist.locate_file(f)))  # RECORD has ../../bin/...
            if p.is_file():
                files.add(p)
    elves = [p for p in sorted(files) if _is_elf(p)]
    return files | _libraries(elves)


def _add(tar: tarfile.TarFile, path: Path, done: set[str]) -> None:
    """Add the file ``path`` with its parents; a symlink on the way is added as a link, with its
    target too (``/lib64 -> usr/lib64`` on merged-/usr systems)."""
    parts = path.parts
    cur = Path("/")
    for i, part in enumerate(parts[1:], start=1):
        cur = cur / part
        key = str(cur)
        if cur.is_symlink():
            if key not in done:
                done.add(key)
                tar.add(key, arcname=key.lstrip("/"), recursive=False)
                target = Path(os.path.normpath(cur.parent / os.readlink(cur)))
                _add(tar, target, done)
            cur = cur.resolve()
            _add(tar, cur.joinpath(*parts[i + 1:]), done)
            return
        if key not in done:
            done.add(key)
            tar.add(key, arcname=key.lstrip("/"), recursive=False)


def build(tag: str, dry_run: bool = False) -> str:
    """Write the root filesystem and import it as ``tag``; the image's id (or, with
    ``dry_run``, the tarball's size)."""
    files = sorted(host_files())
    with tempfile.TemporaryDirectory(prefix="kbench-image-") as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        done: set[str] = set()
        with tarfile.open(tarball, "w") as tar:
            for p in files:
                _add(tar, p, done)
            for d in ("tmp", "etc"):  # mount points and an empty /etc
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
                if f"/{d}" not in done:
                    tar.addfile(info)
        size = tarball.stat().st_size
        if dry_run:
            return f"{len(done)} entries, {size / 2**20:.0f} MiB (not imported)"
        import torch

        from sandbox.backends._docker import _client

        bindir = Path(sys.executable).parent
        changes = [f"ENV PATH={bindir}:/usr/local/bin:/usr/bin:/bin",
                   f"LABEL kbench.torch={torch.__version__}",
                   f"LABEL kbench.python={sys.version.split()[0]}"]
        api = _client(timeout=1800).api
        out = api.import_image_from_file(str(tarball), repository=tag.rsplit(":", 1)[0],
                                         tag=tag.rsplit(":", 1)[1] if ":" in tag else "latest",
                                         changes=changes)
        return f"{tag}: {len(done)} entries, {size / 2**20:.0f} MiB; {str(out).strip()[:200]}"


def main(argv: list[str] | None = None) -> int:
    from sandbox.backends._docker import default_image

    ap = argparse.ArgumentParser(prog="python -m sandbox.backends._docker_image",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", default=None, help="image name (default: the backend's default)")
    ap.add_argument("--dry-run", action="store_true", help="write the tarball, import nothing")
    args = ap.parse_args(argv)
    print(build(args.tag or default_image(), dry_run=args.dry_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
