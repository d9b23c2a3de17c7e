"""Settings for the whole suite.

Fork servers are not kept between commands here (``KBENCH_KEEP_SERVER=0``): each test
process, and each ``kbench`` command a test runs, has its own server, stopped at its exit,
so no test finds a server another left behind. ``tests/test_kept_server.py`` turns keeping
on, in a private directory, to test it.

``KBENCH_TEST_FAILLOG=FILE`` appends each failing test's report to FILE as soon as that test
ends: pytest prints failures only at the end of the session, and a session stopped by a time
limit (the GPU machine's steps, ``bench/gpu_session.sh``) lost every failure's reason.

``KBENCH_TEST_PROGRESS=FILE`` appends a line with the clock time when each test starts and
ends (and on which xdist worker): a session stopped by a time limit told neither which test
was running nor since when (2026-12-07: one test held the GPU step's last four minutes)."""

import os
import time

import pytest

os.environ["KBENCH_KEEP_SERVER"] = "0"


def pytest_runtest_logreport(report):
    path = os.environ.get("KBENCH_TEST_FAILLOG")
    if path and report.failed and not os.environ.get("PYTEST_XDIST_WORKER"):  # xdist: once
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"=== {report.nodeid} ({report.when}) FAILED\n{report.longreprtext}\n\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    path = os.environ.get("KBENCH_TEST_PROGRESS")
    if not path:
        yield
        return
    who = os.environ.get("PYTEST_XDIST_WORKER", "main")
    t0 = time.monotonic()
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {who} start {item.nodeid}\n")
    yield
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%H:%M:%S')} {who} end   {item.nodeid} "
                f"({time.monotonic() - t0:.1f} s)\n")
