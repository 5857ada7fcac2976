"""``python -m pomelo_rpc bench --instructions``: instructions per call under callgrind.

valgrind is not part of ./dev setup: without it the count is skipped (and the command
must say clearly what it needs, which is checked everywhere).
"""

import json
import os
import subprocess
import sys

import pytest

from pomelo_rpc import callgrind
from pomelo_rpc.processes import child_env


def bench(*args, env=None):
    """Run ``python -m pomelo_rpc bench ARGS`` to the end; the finished process."""
    return subprocess.run([sys.executable, "-m", "pomelo_rpc", "bench", *args],
                          capture_output=True, text=True, timeout=120, env=env or child_env())


def test_without_valgrind_the_command_says_what_it_needs():
    env = child_env()
    env["PATH"] = os.path.dirname(sys.executable)        # no valgrind there
    done = bench("--instructions", env=env)
    assert done.returncode != 0
    assert "need valgrind" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(not callgrind.available(), reason="valgrind is not installed")
def test_instructions_per_call_of_the_raw_echo():
    done = bench("--instructions", "--rows", "raw", "--calls", "20", "--json")
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)["instructions_per_call"]
    # a call of the raw echo (both sides, one process) costs tens of thousands of
    # instructions; the start-up (hundreds of millions) must have cancelled out
    assert 5_000 < counts["raw"] < 500_000
