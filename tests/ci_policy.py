"""What CI may skip: pytest hooks that conftest.py takes in (also usable as `-p ci_policy`).

In CI (`CI` set, as .ci/run sets it) a test may skip only for what the machine lacks by nature:
a GPU, a CPU with bf16 kernels, the corpus mirror. A skip for want of setup (Chromium, an extra,
a build tool: what .ci/run and `make test` install) fails there instead, naming what is missing.
Outside CI every skip stays a skip that says why.
"""

from __future__ import annotations

import os

import pytest

SKIPS_ALLOWED_IN_CI = ("needs a CUDA GPU", "no bf16 kernels", "tinyshakespeare not available", "no corpus mirror")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _fail_setup_skips_in_ci(report) -> None:
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        if not any(allowed in reason for allowed in SKIPS_ALLOWED_IN_CI):
            report.outcome = "failed"
            report.longrepr = f"CI must run this, but it was skipped for want of setup: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_setup_skips_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_setup_skips_in_ci(outcome.get_result())  # a whole module skipped (importorskip at its top)
