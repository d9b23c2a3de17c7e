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
import contextlib
import os
import re
import shutil
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

_ROOTS = ("torch", "triton", "numpy", "pydantic", "ninja")  # ninja: load_inline, if here
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
    files |= _toolchain_files()
    elves = [p for p in sorted(files) if _is_elf(p)]
    return files | _libraries(elves)


# Files whose packages make a working ``cc`` and ``c++`` for Python extensions (Triton's
# launcher build on a GPU, load_inline's host code): the drivers, cc1/cc1plus, binutils, crt
# files, libc's and libstdc++'s headers; ldconfig, which Triton runs to find the libcuda the
# NVIDIA runtime mounts; and /bin/sh, through which ninja (torch's builds) runs its commands.
_CC_PROBES = ("cc", "cc1", "as", "ld", "crt1.o", "libc.so", "crtbeginS.o", "include/stddef.h",
              "c++", "cc1plus", "libstdc++.so")  # C++: load_inline's host code, inductor on CPU
_SKIP = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/",
         "/usr/share/lintian/", "/usr/share/bug/")


def _toolchain_files() -> set[Path]:
    """The host's C and C++ toolchain, by the Debian packages that own its parts (``dpkg``); empty,
    with a note on stderr, where there is no ``cc`` or no dpkg."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or shutil.which("dpkg-query") is None:
        print("note: no cc or no dpkg here: the image gets no C toolchain (Triton on a GPU "
              "and CUDA candidates need one: name an image that has it)", file=sys.stderr)
        return set()
    probes = [Path(cc).resolve()]
    for name in _CC_PROBES[1:]:
        flag = "-print-prog-name=" if "." not in name else "-print-file-name="
        out = subprocess.run([cc, flag + name], capture_output=True, text=True).stdout.strip()
        found = Path(out) if out and Path(out).exists() else Path(shutil.which(name) or "/-")
        if found.exists():  # the name's package (/usr/bin/as: binutils) and its target's
            probes += [found, found.resolve()]
    probes += [Path("/usr/include/stdio.h"), Path("/usr/include/linux/limits.h")]
    cxx = shutil.which("c++")
    if cxx:  # libstdc++'s headers (<vector>): the package that owns the C++ driver's include
        out = subprocess.run([cxx, "-print-file-name=include"], capture_output=True, text=True)
        ver = Path(out.stdout.strip()).parent.name  # .../gcc/x86_64-linux-gnu/12/include -> 12
        probes.append(Path(f"/usr/include/c++/{ver}/vector"))
    owners: set[str] = set()
    for p in probes:
        r = subprocess.run(["dpkg-query", "-S", str(p)], capture_output=True, text=True)
        if r.returncode != 0 and str(p).startswith("/usr/"):  # merged /usr: dpkg knows /bin
            r = subprocess.run(["dpkg-query", "-S", str(p)[4:]], capture_output=True, text=True)
        owners.update(line.split(":", 1)[0].split(",")[0].strip()
                      for line in r.stdout.splitlines() if ":" in line)
    files: set[Path] = set()
    for pkg in sorted(owners):
        r = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            p = Path(line)
            if not line.startswith(_SKIP) and (p.is_file() or p.is_symlink()):
                files.add(p)
    extras = [Path(cc), *([Path(cxx)] if cxx else []), Path("/sbin/ldconfig"), Path("/bin/sh"),
              Path("/etc/ld.so.conf"), *Path("/etc/ld.so.conf.d").glob("*.conf"),
              Path(sysconfig.get_paths()["include"])]  # Python.h
    for extra in extras:
        if extra.is_dir():
            files.update(p for p in extra.rglob("*") if p.is_file())
        elif extra.exists():
            files.add(extra)
    return files


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
    has_cc = any(p.name in ("cc1", "cc1plus") for p in files)
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
                   f"LABEL kbench.python={sys.version.split()[0]}",
                   f"LABEL kbench.toolchain={'cc' if has_cc else 'none'}"]
        api = _client(timeout=1800).api
        repo, _, version = tag.rpartition(":") if ":" in tag else (tag, "", "latest")
        try:
            old = api.inspect_image(f"{repo}:{version}")["Id"]
        except Exception:  # noqa: BLE001 - no such image yet (docker.errors.ImageNotFound)
            old = None
        out = api.import_image_from_file(str(tarball), repository=repo, tag=version,
                                         changes=changes)
        ids = re.findall(r"sha256:[0-9a-f]{64}", str(out))
        if not ids:
            raise RuntimeError(f"the engine did not say which image it imported: {out!r}")
        api.tag(ids[-1], repo, version)  # podman's import ignores the tag it was given
        if old and old != ids[-1]:
            # The image this tag named before is now nameless; each rebuild (every CI run)
            # left 2.4 GB behind until the disk filled. One a container still uses stays.
            with contextlib.suppress(Exception):
                api.remove_image(old)
        return f"{tag}: {ids[-1]}, {len(done)} entries, {size / 2**20:.0f} MiB"


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
