"""The house rules the tools in tools/ check: size limits and no import cycle inside the package."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize("tool", ["limits.py", "import_cycles.py"])
def test_the_package_keeps_the_house_rules(tool):
    done = subprocess.run([sys.executable, str(REPO / "tools" / tool)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
