"""Leaderboard reports of stored runs: a terminal table, JSON, and a static HTML site.

Runs measured on different device fingerprints are never mixed: each view shows one
leaderboard per device and says so.

Example:
    >>> from kbench.report import build_report  # doctest: +SKIP
    >>> rep = build_report("kbench.db", problems="level1/*")  # doctest: +SKIP
    >>> [r.suites["all"].fast(1.0) for r in rep.runs]  # doctest: +SKIP
"""

from kbench.report._data import (
    Costs,
    DeviceGroup,
    ProblemEntry,
    Report,
    RunReport,
    build_report,
    fingerprint_label,
)
from kbench.report._html import prepare_html_dir, write_html
from kbench.report._terminal import print_report

__all__ = ["Costs", "DeviceGroup", "ProblemEntry", "Report", "RunReport", "build_report",
           "fingerprint_label", "prepare_html_dir", "print_report", "write_html"]
