"""Sphinx configuration of the pomelo_rpc documentation (built by ``./dev docs`` and by
tests/test_docs.py, strictly: ``-W --keep-going``). Pages are Markdown (MyST)."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))       # the checkout's pomelo_rpc, for autodoc
sys.path.insert(0, os.path.join(HERE, "_ext"))  # options_reference

import pomelo_rpc  # noqa: E402

project = "pomelo_rpc"
author = "the pomelo_rpc authors"
copyright = "2026, the pomelo_rpc authors"
release = version = pomelo_rpc.__version__      # the one place it is written

extensions = ["myst_parser", "sphinx.ext.autodoc", "options_reference"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["README.md", "_build", "_ext"]
# every page must be reachable from the table of contents; a link to a missing page or
# heading is a warning, and -W makes each warning fail the build
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]
suppress_warnings: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"pomelo_rpc {release}"
html_static_path: list[str] = []
smartquotes = False                             # "native" stays "native"
