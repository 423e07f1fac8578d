"""The house rules the tools in tools/ check: size limits, no import cycle inside the package, and
no test holding a computed float to a long stored constant."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "tools" / name), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("tool", ["limits.py", "import_cycles.py", "float_constants.py"])
def test_the_package_keeps_the_house_rules(tool):
    done = _tool(tool)
    assert done.returncode == 0, done.stdout + done.stderr


# The planted constant, written in two parts: a whole literal here would be what the check forbids.
LONG = "5.174077" + "396037316"


def test_a_long_float_in_an_equality_is_flagged(tmp_path):
    planted = tmp_path / "test_planted.py"
    planted.write_text(
        "import pytest\n"
        "def test_a(bpc, loss):\n"
        f"    assert bpc == pytest.approx({LONG}, rel=1e-9)\n"
        "    assert loss != 0.12345678\n"
        "    assert bpc == pytest.approx(0.4385, abs=1e-4)\n"  # 4 digits: a stated figure, not a run's
        "    x = 3.14159265358979\n"  # not compared
    )
    done = _tool("float_constants.py", str(planted))
    assert done.returncode == 1
    flagged = done.stdout.splitlines()
    assert [line.split(": ")[1].split(" ")[0] for line in flagged] == [LONG, "0.12345678"]
    assert flagged[0].startswith(f"{planted}:3:")
