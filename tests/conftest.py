"""Settings for the whole suite.

Fork servers are not kept between commands here (``KBENCH_KEEP_SERVER=0``): each test
process, and each ``kbench`` command a test runs, has its own server, stopped at its exit,
so no test finds a server another left behind. ``tests/test_kept_server.py`` turns keeping
on, in a private directory, to test it."""

import os

os.environ["KBENCH_KEEP_SERVER"] = "0"
