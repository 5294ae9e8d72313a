"""The code base stays clean under the project's ruff rules (pyproject.toml)."""

import subprocess
import sys

from tests.support.live_server import PROJECT_DIR


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=PROJECT_DIR,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
