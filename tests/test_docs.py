"""The documentation (docs/, Sphinx + MyST): it builds strictly (a warning, a broken link,
a missing page or a page left out of the table of contents fails), its options
reference is options.py's dicts, and the README's example runs."""

import ast
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from pomelo_rpc.options import CLIENT_DEFAULTS, SERVER_DEFAULTS

sys.path.insert(0, os.path.join(ROOT, "docs", "_ext"))
import options_reference  # noqa: E402

DOCS = os.path.join(ROOT, "docs")
OPTIONS_PY = os.path.join(ROOT, "pomelo_rpc", "options.py")


def sphinx(src, out):
    """``./dev docs``'s build of ``src`` into ``out``: the finished process."""
    return subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                           "-b", "html", src, out], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = sphinx(DOCS, str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _text(path):
    """The words of an HTML page, tags dropped."""
    with open(path, encoding="utf-8") as f:
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", f.read()))


def test_every_page_is_built_and_reachable_from_the_front_page(site):
    pages = sorted(f[:-3] for f in os.listdir(DOCS) if f.endswith(".md") and f != "README.md")
    for page in pages:
        assert (site / f"{page}.html").exists(), page
    with open(site / "index.html", encoding="utf-8") as f:
        index = f.read()
    for page in pages:
        if page != "index":
            assert f'href="{page}.html"' in index, page
    # the front page is the README
    assert "Headline figures" in _text(site / "index.html")


def test_options_page_lists_every_option_with_its_default(site):
    text = _text(site / "options.html")
    for options in (SERVER_DEFAULTS, CLIENT_DEFAULTS):
        for name in options:
            assert f" {name} " in text, name
    assert "8 * 1024 * 1024" in text and "127.0.0.1" in text


def test_api_reference_is_generated_from_the_docstrings(site):
    import pomelo_rpc
    from pomelo_rpc import client, server
    text = _text(site / "api.html")
    for doc in (server.create.__doc__, client.RpcClient.rpc_invoke.__doc__,
                pomelo_rpc.time_remaining.__doc__):
        first = doc.strip().splitlines()[0]
        words = re.sub(r"``?", "", first).split()[:5]
        assert " ".join(words) in text.replace("“", '"').replace("”", '"'), first


def test_a_broken_link_a_missing_page_or_a_page_left_out_fails_the_build(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    shutil.copy(os.path.join(DOCS, "conf.py"), src)
    shutil.copytree(os.path.join(DOCS, "_ext"), src / "_ext")
    (src / "index.md").write_text("# Front\n\n```{toctree}\nlinks\ngone\n```\n")
    (src / "links.md").write_text("# Links\n\n## A heading\n\n[ok](#a-heading) "
                                  "[missing page](nowhere.md) [missing heading](#nope)\n")
    (src / "left-out.md").write_text("# Not in any table of contents\n")
    proc = sphinx(str(src), str(tmp_path / "out"))
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "nonexisting document 'gone'" in log, log
    assert "'nowhere.md'" in log and "'nope'" in log, log
    assert "left-out.md: WARNING: document isn't included in any toctree" in log, log
    assert "a-heading" not in log


def test_options_reference_reads_options_py_as_the_code_does():
    with open(OPTIONS_PY, encoding="utf-8") as f:
        source = f.read()
    read = options_reference.read_options(source)
    for name, runtime in (("SERVER_DEFAULTS", SERVER_DEFAULTS),
                          ("CLIENT_DEFAULTS", CLIENT_DEFAULTS)):
        options = read[name]
        assert [o.name for o in options] == list(runtime)
        for o in options:
            assert eval(compile(ast.parse(o.default, mode="eval"), "", "eval")) == runtime[o.name]
            assert len(o.doc) > 8, o


SAMPLE = '''
SERVER_DEFAULTS = {
    "port": 0,        # port to bind
                      # (0: an ephemeral one)
    # two options under one comment block
    "buffer_msg": False,
    "interval": 0.05,

    # a heading, then options with their own comments
    "ssl": None,      # an SSLContext
    "pkg_size": 8 * 1024 * 1024,  # largest frame
}
CLIENT_DEFAULTS = {
    "timeout": 10.0,  # seconds a call may wait
}
'''


def test_options_comments_beside_above_and_shared():
    read = options_reference.read_options(SAMPLE)
    docs = {o.name: (o.default, o.doc) for o in read["SERVER_DEFAULTS"]}
    assert docs == {
        "port": ("0", "port to bind (0: an ephemeral one)"),
        "buffer_msg": ("False", "two options under one comment block"),
        "interval": ("0.05", "two options under one comment block"),
        "ssl": ("None", "an SSLContext"),
        "pkg_size": ("8 * 1024 * 1024", "largest frame"),
    }
    table = options_reference.markdown_table(read["CLIENT_DEFAULTS"])
    assert table.splitlines()[-1] == "| `timeout` | `10.0` | seconds a call may wait |"


@pytest.mark.parametrize("broken, error", [
    (SAMPLE.replace('"interval": 0.05,', '"interval": 0.05,\n    "port": 1,  # again'),
     "'port' is written twice"),
    (SAMPLE.replace('"interval": 0.05,\n', '"interval": 0.05,\n\n    "lonely": 1,\n'),
     "option 'lonely' (line 9) has no comment"),
    (SAMPLE.replace("CLIENT_DEFAULTS", "OTHER"), "no dict CLIENT_DEFAULTS"),
])
def test_options_written_twice_or_undocumented_fail_the_reference(broken, error):
    with pytest.raises(options_reference.OptionsError, match=re.escape(error)):
        options_reference.read_options(broken)


def test_readme_example_runs(tmp_path):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        service, main = re.findall(r"```python\n(.*?)```", f.read(), re.S)[:2]
    assert service.startswith("# remote/area/player.py")
    (tmp_path / "remote" / "area").mkdir(parents=True)
    (tmp_path / "remote" / "area" / "player.py").write_text(service)
    (tmp_path / "main.py").write_text(main)
    proc = subprocess.run([sys.executable, "main.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "{'uid': 1001, 'at': [3, 4], 'server_id': 'area-1'}"
