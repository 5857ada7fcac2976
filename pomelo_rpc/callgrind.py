"""Instructions per operation, counted by ``valgrind --tool=callgrind`` (for the benches).

How the measured phase is isolated: by subtraction. A child process that performs a
warm-up and then exactly ``n`` operations is counted twice, with ``n`` and with ``3n``;
``(total(3n) - total(n)) / 2n`` is the cost of one operation in steady state. Start-up,
imports, the warm-up and the shutdown are the same in both runs and cancel out, and
nothing has to be synchronised with the running child. The alternatives are less
robust for a Python program: ``--toggle-collect=FUNC`` needs a C function entered only
during the measured phase (Python code all runs inside ``_PyEval_EvalFrameDefault``),
and ``--collect-atstart=no`` + ``callgrind_control -i on/off`` needs vgdb to reach a
child blocked at a handshake (ptrace, often denied in containers) and races with it.

Counts are user-space instructions (``Ir``) of the whole process, every thread. They
hardly move with the machine's load: two runs of ``bench --instructions`` agreed within
0.2% on the raw echoes and the Cython async row, 1-3% on the others, where calls/s here
wander by 10% or more. What remains comes from code driven by the clock (timers, time
slices), which runs at valgrind's pace; the child should also freeze its start-up heap
(``gc.freeze()``), or a full GC falling in one run and not the other shows up.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

#: A command line of a child doing a warm-up then exactly ``n`` operations.
ArgvFor = Callable[[int], Sequence[str]]

MISSING = ("instruction counts need valgrind (callgrind), which is not installed: "
           "apt-get install valgrind")

_TOTAL = re.compile(r"(?:summary|totals):\s+(\d+)")
# a function line of callgrind_annotate: "12,345,678 (12.34%)  file:function [object]"
_FUNC = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*?)\s*$")


def available() -> bool:
    """True when valgrind and callgrind_annotate are on PATH."""
    return shutil.which("valgrind") is not None and shutil.which("callgrind_annotate") is not None


def require() -> None:
    """Exit with a clear message when valgrind is missing."""
    if not available():
        raise SystemExit(MISSING)


def _run(argv: Sequence[str], out: str, env: dict[str, str] | None) -> None:
    """Run ``argv`` under callgrind, its profile written to ``out``."""
    proc = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                           *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed under callgrind "
                           f"(exit {proc.returncode}):\n{proc.stderr[-2000:]}")


def total(path: str) -> int:
    """The instruction total of the callgrind profile at ``path``."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _TOTAL.match(line)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"no instruction total in {path}")


def instructions(argv: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Instructions callgrind counts in the process ``argv`` (every thread)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        _run(argv, out, env)
        return total(out)


def per_op(argv_for: ArgvFor, n: int, env: dict[str, str] | None = None) -> float:
    """Instructions of one operation: runs of ``n`` and ``3n`` operations (at the same
    time), subtracted."""
    with ThreadPoolExecutor(2) as pool:
        small, big = pool.map(lambda k: instructions(argv_for(k), env), (n, 3 * n))
    return (big - small) / (2 * n)


def _short(name: str) -> str:
    """``dir/file.c:func'2 [dir/lib.so]`` as ``file.c:func [lib.so]`` (recursion levels
    of one function merged)."""
    where, _, obj = name.partition(" [")
    path, _, func = where.rpartition(":")
    func = re.sub(r"'\d+$", "", func)
    obj = os.path.basename(obj.rstrip("]"))
    return f"{os.path.basename(path)}:{func}" + (f" [{obj}]" if obj else "")


def functions(path: str) -> dict[str, int]:
    """Exclusive instructions per function of the profile at ``path``
    (``callgrind_annotate``, every function listed)."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", path],
                          capture_output=True, text=True, check=True).stdout
    out: dict[str, int] = {}
    started = False
    for line in text.splitlines():
        if not started:
            started = line.lstrip().startswith("Ir") and "file:function" in line
            continue
        m = _FUNC.match(line)
        if m and ":" in m.group(2):
            name = _short(m.group(2))
            out[name] = out.get(name, 0) + int(m.group(1).replace(",", ""))
        elif out and not line.strip():
            break
    return out


def profile(argv_for: ArgvFor, n: int,
            env: dict[str, str] | None = None) -> tuple[float, dict[str, float]]:
    """Instructions of one operation, and the exclusive instructions per operation of
    every function (profiles of ``n`` and ``3n`` operations subtracted function by
    function, so start-up does not show)."""
    with tempfile.TemporaryDirectory() as tmp:
        small, big = os.path.join(tmp, "small.out"), os.path.join(tmp, "big.out")
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda k_out: _run(argv_for(k_out[0]), k_out[1], env),
                          ((n, small), (3 * n, big))))
        per = (total(big) - total(small)) / (2 * n)
        before, after = functions(small), functions(big)
    return per, {name: (count - before.get(name, 0)) / (2 * n) for name, count in after.items()}


def format_profile(per: float, funcs: dict[str, float], top: int = 30) -> str:
    """A profile of ``profile()`` as text: the instructions per operation by shared
    object (a function without one is inlined header code),
    then the ``top`` functions."""
    objects: dict[str, float] = {}
    for name, count in funcs.items():
        obj = (name.rpartition(" [")[2].rstrip("]") if name.endswith("]")
               else "(no object: inlined header code, mostly libpython's)")
        objects[obj] = objects.get(obj, 0.0) + count
    lines = [f"{per:,.0f} instructions per call; by shared object:"]
    lines += [f"{count:>10,.0f} {count / per:>6.1%}  {obj}"
              for obj, count in sorted(objects.items(), key=lambda kv: -kv[1])
              if count >= 0.005 * per]
    lines += ["", f"top {top} functions (exclusive instructions per call):",
              f"{'Ir/call':>10} {'share':>6}  function"]
    lines += [f"{count:>10,.0f} {count / per:>6.1%}  {name}"
              for name, count in sorted(funcs.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(lines) + "\n"
