"""Settings for the whole suite.

Fork servers are not kept between commands here (``KBENCH_KEEP_SERVER=0``): each test
process, and each ``kbench`` command a test runs, has its own server, stopped at its exit,
so no test finds a server another left behind. ``tests/test_kept_server.py`` turns keeping
on, in a private directory, to test it.

``KBENCH_TEST_FAILLOG=FILE`` appends each failing test's report to FILE as soon as that test
ends: pytest prints failures only at the end of the session, and a session stopped by a time
limit (the GPU machine's steps, ``bench/gpu_session.sh``) lost every failure's reason."""

import os

os.environ["KBENCH_KEEP_SERVER"] = "0"


def pytest_runtest_logreport(report):
    path = os.environ.get("KBENCH_TEST_FAILLOG")
    if path and report.failed and not os.environ.get("PYTEST_XDIST_WORKER"):  # xdist: once
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"=== {report.nodeid} ({report.when}) FAILED\n{report.longreprtext}\n\n")
