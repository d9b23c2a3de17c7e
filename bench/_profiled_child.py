"""Run ``python -m sandbox._child ...`` under cProfile (for bench/verify_profile.py):
``python bench/_profiled_child.py OUT.prof PYTHON -m sandbox._child WORK FD``. The child's
exit status is kept; the profile is written however it ends, short of a kill. What the fork
server imports ahead is imported before the profile starts, as a forked child finds it."""

from __future__ import annotations

import cProfile
import runpy
import sys


def main() -> None:
    out = sys.argv[1]
    rest = sys.argv[2:]  # PYTHON -m sandbox._child WORK FD
    if rest[1:3] != ["-m", "sandbox._child"]:
        raise SystemExit(f"expected PYTHON -m sandbox._child ..., got {rest[:3]}")
    sys.argv = ["sandbox._child", *rest[3:]]
    from sandbox._forkserver import _preimport

    _preimport()
    prof = cProfile.Profile()
    code: object = 0
    try:
        prof.runcall(runpy.run_module, "sandbox._child", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    finally:
        prof.dump_stats(out)
    sys.exit(code)


if __name__ == "__main__":
    main()
