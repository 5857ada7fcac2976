"""Packaging: what a user installs, each in a clean venv, from the release build
(``tools/dist.py``, what ``./dev wheel`` runs), made once per session.

- the repaired manylinux wheel, installed with no compiler on PATH: the compiled core,
  ``--version``, the demo's cluster running from it;
- the sdist with a compiler (the compiled core) and without one (the pure core, and a
  warning at install and at import);
- each extra (redis, etcd, metrics, otel): installed alone with the wheel, its feature
  starts and serves a real call (``extras_check.py`` runs in the venv);
- the wheel's contents (the stripped compiled core, no sources) and its size, reported.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass

import pytest

import pomelo_rpc
from conftest import HERE, ROOT, report
from engines import EtcdEngine, RedisEngine

#: The wheel stays small: the compiled core stripped, no sources (712 KiB at 0.1.0).
WHEEL_LIMIT = 1536 * 1024
CHECK = "import pomelo_rpc; print(pomelo_rpc.IMPLEMENTATION)"
CORE = ("frames", "mqtt", "pinus_tcp", "coro", "clock", "context", "sampling", "pending",
        "dispatch", "meter", "writer", "client_protocol", "server_protocol", "json_codec",
        "json_protocol", "invoke", "forward")
ECHO_OVER_A_SOCKET = (
    "import pomelo_rpc\n"
    "from pomelo_rpc import server, client\n"
    "async def main():\n"
    "    gw = server.create(services={'user': {'svc': {'echo': lambda x: x}}})\n"
    "    await gw.start()\n"
    "    cli = client.create()\n"
    "    cli.add_servers([{'id': 's', 'server_type': 't', 'port': gw.port}])\n"
    "    await cli.start()\n"
    "    r = await cli.rpc_invoke('s', {'namespace': 'user', 'server_type': 't',\n"
    "                                   'service': 'svc', 'method': 'echo', 'args': [7]})\n"
    "    await cli.stop(); await gw.stop()\n"
    "    print(r)\n"
    "pomelo_rpc.run(main())\n")


def _clean_env(path=None, **extra):
    """The environment without PYTHONPATH or POMELO_RPC_PURE, so only the venv under test
    is seen; ``path``: PATH holds only these folders (no compiler)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "POMELO_RPC_PURE", "CC", "CFLAGS")}
    if path is not None:
        env["PATH"] = os.pathsep.join(path)
    env.update(extra)
    return env


def _run(cmd, env=None, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=env or _clean_env(), **kw)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


class Venv:
    """A clean venv (pip only); ``bin`` is its scripts folder."""

    def __init__(self, path):
        _run([sys.executable, "-m", "venv", str(path)])
        self.path = path
        self.bin = str(path / "bin")
        self.python = os.path.join(self.bin, "python")

    def env(self, **extra):
        """Run with only the venv's scripts on PATH: no gcc, no cc."""
        env = _clean_env([self.bin], **extra)
        for compiler in ("gcc", "cc", "clang"):
            assert shutil.which(compiler, path=env["PATH"]) is None
        return env

    def pip_install(self, *args, env=None):
        return _run([self.python, "-m", "pip", "install", "-q", *args], env=env or self.env())

    def run(self, *args, env=None, cwd):
        """``python args`` from ``cwd`` (never the checkout, whose sources would shadow)."""
        return _run([self.python, *args], env=env or self.env(), cwd=cwd)


@dataclass
class Release:
    sdist: str
    wheel: str
    seconds: float


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    """``tools/dist.py``'s sdist and repaired wheel, built once per session."""
    out = tmp_path_factory.mktemp("dist")
    t0 = time.monotonic()
    _run([sys.executable, os.path.join(ROOT, "tools", "dist.py"), "--outdir", str(out)])
    seconds = time.monotonic() - t0
    sdist = [f for f in os.listdir(out) if f.endswith(".tar.gz")]
    wheel = [f for f in os.listdir(out) if f.endswith(".whl")]
    assert len(sdist) == 1 and len(wheel) == 1, os.listdir(out)
    return Release(str(out / sdist[0]), str(out / wheel[0]), seconds)


@pytest.fixture
def sdist_copy(release, tmp_path):
    """The sdist at a path of this test's own (pip's cache of wheels it built from an
    sdist is keyed by its path: each install builds afresh)."""
    return shutil.copy(release.sdist, tmp_path)


def test_release_build_is_a_small_manylinux_wheel_holding_only_the_stripped_core(release):
    from elftools.elf.elffile import ELFFile
    name = os.path.basename(release.wheel)
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert name.startswith(f"pomelo_rpc-{pomelo_rpc.__version__}-{tag}-{tag}-"), name
    assert re.search(r"manylinux_2_\d+_x86_64|manylinux_2_\d+_aarch64", name), name
    with zipfile.ZipFile(release.wheel) as whl:
        names = whl.namelist()
        unpacked = sum(i.file_size for i in whl.infolist())
        metadata = whl.read(f"pomelo_rpc-{pomelo_rpc.__version__}.dist-info/METADATA").decode()
        cy = sorted(n for n in names if n.startswith("pomelo_rpc/_cy/") and not n.endswith("/"))
        compiled = [n for n in cy if n.endswith(".so")]
        assert sorted(n.split("/")[-1].split(".")[0] for n in compiled) == sorted(CORE)
        assert cy == sorted(compiled + ["pomelo_rpc/_cy/__init__.py"])
        assert not [n for n in names if n.endswith((".c", ".pyx", ".pxd", ".html"))]
        for n in compiled:
            with whl.open(n) as f:
                sections = [s.name for s in ELFFile(f).iter_sections()]
            assert ".symtab" not in sections and not any(s.startswith(".debug")
                                                         for s in sections), n
    # what the package needs at run time is there: the demo's and bench's services
    assert "pomelo_rpc/demo_remote/area/player.py" in names, names
    assert "pomelo_rpc/py.typed" in names
    assert f"Version: {pomelo_rpc.__version__}" in metadata
    for extra in ("redis", "etcd", "metrics", "otel"):
        assert f"Provides-Extra: {extra}" in metadata
    size, sdist_size = os.path.getsize(release.wheel), os.path.getsize(release.sdist)
    report(f"release build ({release.seconds:.0f} s): {name} {size / 1024:.0f} KiB "
           f"(unpacked {unpacked / 1024:.0f} KiB), "
           f"{os.path.basename(release.sdist)} {sdist_size / 1024:.0f} KiB")
    assert size < WHEEL_LIMIT, f"the wheel grew to {size} bytes"


def test_sdist_holds_the_sources_and_no_generated_files(release):
    import tarfile
    with tarfile.open(release.sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    for needed in ("setup.py", "pyproject.toml", "LICENSE", "CHANGELOG.md", "README.md",
                   "pomelo_rpc/_cy/frames.pyx", "pomelo_rpc/_cy/pending.pxd",
                   "pomelo_rpc/_cy/pending.py", "pomelo_rpc/core/pending.py"):
        assert needed in names, needed
    assert not [n for n in names if n.endswith((".c", ".so", ".html", ".pyc"))]


def test_wheel_without_a_compiler_runs_the_compiled_core_and_the_demo_cluster(
        release, tmp_path):
    venv = Venv(tmp_path / "venv")
    venv.pip_install(release.wheel)
    assert venv.run("-c", CHECK, cwd=tmp_path).stdout.strip() == "cython"
    version = venv.run("-m", "pomelo_rpc", "--version", cwd=tmp_path).stdout
    assert version.startswith(f"pomelo-rpc {pomelo_rpc.__version__} (cython core"), version
    script = _run([os.path.join(venv.bin, "pomelo-rpc"), "--version"], env=venv.env(),
                  cwd=tmp_path)
    assert script.stdout == version
    t0 = time.monotonic()
    demo = venv.run("-m", "pomelo_rpc", "demo", "--seconds", "0.1", cwd=tmp_path)
    assert "pomelo_rpc demo: cython core" in demo.stdout, demo.stdout
    for server_id in ("area-1", "area-2", "area-3", "chat-1", "chat-2"):
        assert f"server {server_id}" in demo.stdout
    assert "routed over 3 servers" in demo.stdout and "cluster stopped." in demo.stdout
    assert "WARNING" not in demo.stderr, demo.stderr
    report(f"the demo's cluster from the installed wheel: {time.monotonic() - t0:.1f} s")


def test_sdist_with_a_compiler_installs_the_compiled_core(sdist_copy, tmp_path):
    venv = Venv(tmp_path / "venv")
    # the compiler the machine has; a studio's build image would have the same
    assert shutil.which("gcc") or shutil.which("cc"), "no C compiler on this machine"
    venv.pip_install(sdist_copy, env=_clean_env())
    assert venv.run("-c", CHECK, cwd=tmp_path).stdout.strip() == "cython"


def test_sdist_without_a_compiler_installs_the_pure_core_with_a_clear_warning(
        sdist_copy, tmp_path):
    venv = Venv(tmp_path / "venv")
    proc = _run([venv.python, "-m", "pip", "install", "-v", sdist_copy], env=venv.env())
    build_log = proc.stdout + proc.stderr
    assert "could not be compiled (no working C compiler" in build_log, build_log[-3000:]
    assert "apt-get install gcc python3-dev" in build_log
    imported = venv.run("-c", CHECK, cwd=tmp_path)
    assert imported.stdout.strip() == "python"
    # the installed package says so at import, once, until POMELO_RPC_PURE=1 says it is meant
    assert "could not be compiled" in imported.stderr, imported.stderr
    quiet = venv.run("-c", CHECK, env=venv.env(POMELO_RPC_PURE="1"), cwd=tmp_path)
    assert quiet.stdout.strip() == "python" and quiet.stderr == ""
    assert venv.run("-c", ECHO_OVER_A_SOCKET, env=venv.env(POMELO_RPC_PURE="1"),
                    cwd=tmp_path).stdout.strip() == "7"
    version = venv.run("-m", "pomelo_rpc", "--version", env=venv.env(POMELO_RPC_PURE="1"),
                       cwd=tmp_path).stdout
    assert f"{pomelo_rpc.__version__} (python core" in version


@pytest.mark.parametrize("extra", ["redis", "etcd", "metrics", "otel"])
def test_each_extra_installs_alone_and_its_feature_starts(release, tmp_path, extra):
    engine = {"redis": RedisEngine, "etcd": EtcdEngine}.get(extra)
    engine = engine() if engine else None
    try:
        venv = Venv(tmp_path / "venv")
        venv.pip_install(f"{release.wheel}[{extra}]")
        check = shutil.copy(os.path.join(HERE, "extras_check.py"), tmp_path)
        args = [check, extra] + ([engine.url] if engine else [])
        seen = json.loads(venv.run(*args, cwd=tmp_path).stdout)
        assert seen["extra"] == extra and seen["implementation"] == "cython"
        if extra == "otel":     # the SDK and exporter are the user's: spans across a call
            venv.pip_install("opentelemetry-sdk>=1.20")
            seen = json.loads(venv.run(check, "otel-sdk", cwd=tmp_path).stdout)
            assert seen["spans"] == ["CLIENT user.svc/echo", "SERVER user.svc/echo"], seen
    finally:
        if engine:
            engine.close()


def test_the_version_is_written_once_and_the_changelog_heads_with_it():
    tracked = _run(["git", "ls-files", "*.py", "*.toml", "*.cfg"], cwd=ROOT).stdout.split()
    written = [f for f in tracked
               if re.search(r"^__version__\s*=", open(os.path.join(ROOT, f)).read(), re.M)]
    assert written == ["pomelo_rpc/__init__.py"], written
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "pomelo_rpc.__version__" }' in pyproject
    changelog = open(os.path.join(ROOT, "CHANGELOG.md")).read()
    first = re.search(r"^## (\S+)", changelog, re.M)
    assert first and first.group(1) == pomelo_rpc.__version__, first
    out = _run([sys.executable, "-m", "pomelo_rpc", "--version"], cwd=ROOT).stdout
    assert out.startswith(f"pomelo-rpc {pomelo_rpc.__version__} ("), out


def test_cibuildwheel_config_is_the_release_matrix_and_the_workflow_runs_it():
    """What cibuildwheel reads from pyproject.toml (it runs here without docker: the
    builds themselves need the manylinux images and macOS runners of the workflow)."""
    cibw = os.path.join(os.path.dirname(sys.executable), "cibuildwheel")
    expected = {
        "linux": {f"cp3{m}-{libc}_{arch}" for m in (10, 11, 12, 13)
                  for libc in ("manylinux", "musllinux") for arch in ("x86_64", "aarch64")},
        "macos": {f"cp3{m}-macosx_{arch}" for m in (10, 11, 12, 13)
                  for arch in ("x86_64", "arm64")},
    }
    for platform, ids in expected.items():
        out = _run([cibw, "--print-build-identifiers", "--platform", platform], cwd=ROOT)
        assert set(out.stdout.split()) == ids, out.stdout
    import yaml
    with open(os.path.join(ROOT, ".github", "workflows", "wheels.yml")) as f:
        workflow = yaml.safe_load(f)
    steps = [s.get("uses", "") for s in workflow["jobs"]["wheels"]["steps"]]
    assert any(s.startswith("pypa/cibuildwheel@") for s in steps), steps
    archs = {e["archs"] for e in workflow["jobs"]["wheels"]["strategy"]["matrix"]["include"]}
    assert archs == {"x86_64", "aarch64", "arm64"}
    sdist_job = "\n".join(s.get("run", "") for s in workflow["jobs"]["sdist"]["steps"])
    assert "tools/dist.py" in sdist_job
