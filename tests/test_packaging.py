"""Packaging: the wheel carries the compiled core; an sdist installs without a compiler."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

CHECK = "import pomelo_rpc, sys; print(pomelo_rpc.IMPLEMENTATION)"


def _clean_env(**extra):
    """The environment without PYTHONPATH, so only the venv under test is seen."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "POMELO_RPC_PURE")}
    env.update(extra)
    return env


def _run(cmd, env=None, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=env or _clean_env(), **kw)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _venv(path):
    _run([sys.executable, "-m", "venv", str(path)])
    return str(path / "bin" / "python")


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """An sdist and a wheel built from this checkout."""
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel",
          "--outdir", str(out), ROOT])
    files = os.listdir(out)
    sdist = [f for f in files if f.endswith(".tar.gz")]
    wheel = [f for f in files if f.endswith(".whl")]
    assert len(sdist) == 1 and len(wheel) == 1, files
    return out / sdist[0], out / wheel[0]


def test_wheel_is_platform_specific_and_imports_the_compiled_core(dists, tmp_path):
    _, wheel = dists
    assert "-none-any" not in wheel.name, "the wheel must carry the compiled core"
    py = _venv(tmp_path / "venv")
    _run([py, "-m", "pip", "install", "-q", str(wheel)])
    # run from tmp_path so the checkout's sources are not importable
    assert _run([py, "-c", CHECK], cwd=tmp_path).stdout.strip() == "cython"


def test_sdist_without_a_compiler_installs_the_pure_core_with_a_warning(dists, tmp_path):
    sdist, _ = dists
    py = _venv(tmp_path / "venv")
    env = _clean_env(CC="/bin/false", CXX="/bin/false")
    proc = _run([py, "-m", "pip", "install", "-v", "--no-cache-dir", str(sdist)], env=env)
    assert "could not be compiled" in proc.stdout + proc.stderr
    assert _run([py, "-c", CHECK], cwd=tmp_path).stdout.strip() == "python"
    # and the pure install works: a call over a real socket
    script = (
        "import pomelo_rpc, asyncio\n"
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
    assert _run([py, "-c", script], cwd=tmp_path).stdout.strip() == "7"
