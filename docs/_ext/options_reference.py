"""The options reference, generated from ``pomelo_rpc/options.py`` so that it cannot drift.

``read_options(source)`` reads each options dict of the file (``SERVER_DEFAULTS``,
``CLIENT_DEFAULTS``) with ``ast`` (the keys, the defaults as written) and ``tokenize``
(the comments). An option's one-line doc is its ``#`` comment:

- a comment beside it (comment lines right below it, starting in the same column, carry
  it on);
- else the block of comment lines right above it;
- else, for an option right below one that took its doc from a block (no blank line
  between), that same block: one comment for a group such as ``buffer_msg``/``interval``.

A key written twice, a key that is not a string, or an option without a comment is an
``OptionsError``: the documentation's build fails and names it.

As a Sphinx extension, it replaces each line ``<!-- options: NAME -->`` of a page with the
Markdown table of dict NAME (option, default, what it is); a dict the ``options`` page
does not show fails the build.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from dataclasses import dataclass

#: The options dicts of pomelo_rpc/options.py.
DICTS = ("SERVER_DEFAULTS", "CLIENT_DEFAULTS")
MARKER = re.compile(r"^<!-- options: (\w+) -->$", re.M)
#: The page that shows every dict.
PAGE = "options"


class OptionsError(ValueError):
    """options.py cannot be documented as it is written."""


@dataclass
class Option:
    name: str
    default: str        # the default as written in options.py
    doc: str
    line: int


@dataclass
class _Comment:
    col: int
    text: str
    alone: bool         # the only thing on its line


def _comments(source: str) -> dict[int, _Comment]:
    lines = source.splitlines()
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            line, col = tok.start
            found[line] = _Comment(col, tok.string.lstrip("#").strip(),
                                   not lines[line - 1][:col].strip())
    return found


def read_options(source: str) -> dict[str, list[Option]]:
    """Each options dict of ``source`` (options.py's text): its options in order."""
    comments = _comments(source)
    result: dict[str, list[Option]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Assign):
            targets = node.targets
        else:
            continue
        names = [t.id for t in targets if isinstance(t, ast.Name) and t.id in DICTS]
        if not names or not isinstance(node.value, ast.Dict):
            continue
        result[names[0]] = _read_dict(names[0], node.value, source, comments)
    missing = [d for d in DICTS if d not in result]
    if missing:
        raise OptionsError(f"options.py: no dict {', '.join(missing)}")
    return result


def _read_dict(what: str, node: ast.Dict, source: str,
               comments: dict[int, _Comment]) -> list[Option]:
    options: list[Option] = []
    prev_end = node.lineno             # the line of the "{", then of the previous value
    trailing_col = None                # column of the previous option's beside comment
    shared = None                      # the block the previous option took its doc from
    for key, value in zip(node.keys, node.values):
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            raise OptionsError(f"{what}: line {value.lineno}: every key must be a string")
        name = key.value
        if any(o.name == name for o in options):
            raise OptionsError(f"{what}: {name!r} is written twice (line {key.lineno})")
        block = []
        line = key.lineno - 1
        while line > prev_end and line in comments and comments[line].alone:
            block.insert(0, line)
            line -= 1
        # comment lines right below a beside comment, in its column, carry it on
        while (block and trailing_col is not None and block[0] == prev_end + 1
               and comments[block[0]].col == trailing_col):
            options[-1].doc += " " + comments[block.pop(0)].text
            prev_end += 1
        beside = comments.get(value.end_lineno or value.lineno)
        if beside is not None and not beside.alone:
            doc, shared, trailing_col = beside.text, None, beside.col
        elif block:
            doc = shared = " ".join(comments[ln].text for ln in block)
            trailing_col = None
        elif shared is not None and key.lineno == prev_end + 1:
            doc, trailing_col = shared, None
        else:
            raise OptionsError(f"{what}: option {name!r} (line {key.lineno}) has no comment "
                               "saying what it is")
        default = ast.get_source_segment(source, value) or ""
        options.append(Option(name, " ".join(default.split()), doc, key.lineno))
        prev_end = value.end_lineno or value.lineno
    return options


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(options: list[Option]) -> str:
    """The Markdown table of ``options``: option, default, what it is."""
    rows = ["| option | default | what it is |", "|---|---|---|"]
    for o in options:
        rows.append(f"| `{o.name}` | `{_cell(o.default)}` | {_cell(o.doc)} |")
    return "\n".join(rows)


def render(page: str, options: dict[str, list[Option]]) -> tuple[str, set[str]]:
    """``page`` with each ``<!-- options: NAME -->`` line replaced by NAME's table, and the
    names it showed."""
    shown = set()

    def table(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in options:
            raise OptionsError(f"options page: no dict {name} in options.py")
        shown.add(name)
        return markdown_table(options[name])

    return MARKER.sub(table, page), shown


def options_file(confdir: str) -> str:
    """pomelo_rpc/options.py of the checkout the documentation belongs to."""
    return os.path.join(os.path.dirname(confdir), "pomelo_rpc", "options.py")


def setup(app):  # type: ignore[no-untyped-def]
    """Sphinx: fill in the tables of the ``options`` page (the ``source-read`` event), and
    read that page again at every build (it depends on options.py, not only on itself)."""
    app.add_config_value("options_reference_file", options_file(app.confdir), "env")

    def source_read(app, docname, content):  # type: ignore[no-untyped-def]
        if docname != PAGE and not MARKER.search(content[0]):
            return
        with open(app.config.options_reference_file, encoding="utf-8") as f:
            options = read_options(f.read())
        content[0], shown = render(content[0], options)
        left_out = [d for d in DICTS if d not in shown]
        if docname == PAGE and left_out:
            raise OptionsError(f"{docname}: no table of {', '.join(left_out)}")

    def read_again(app, env, docnames):  # type: ignore[no-untyped-def]
        if PAGE in env.found_docs and PAGE not in docnames:
            docnames.append(PAGE)

    app.connect("source-read", source_read)
    app.connect("env-before-read-docs", read_again)
    return {"version": "1", "parallel_read_safe": True}
