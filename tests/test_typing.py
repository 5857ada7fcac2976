"""Typing: ``mypy --strict pomelo_rpc`` passes (configuration: ``[tool.mypy]`` in pyproject.toml).

The Cython modules are checked through their stubs (``pomelo_rpc/_cy/*.pyi``), and
``pomelo_rpc.core`` checks that both cores fit the protocols the package uses.
"""

import importlib.util
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mypy") is None,
    reason="mypy is not installed (it comes with the 'test' extra: pip install -e '.[test]')")


def test_mypy_strict_passes():
    cmd = [sys.executable, "-m", "mypy", "--strict", "pomelo_rpc"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        print(output)
    assert proc.returncode == 0, f"{' '.join(cmd[1:])} failed:\n{output}"
