"""Sphinx configuration of psmpi's documentation (MyST Markdown, autodoc, furo).

``sphinx-build -W docs docs/_build`` builds it; tests/test_docs.py does so with warnings as
errors. The CLI reference (``reference/cli-help.md``) is generated here from the argparse
parsers of ``psmpi.cli``, so it never drifts from ``psmpi --help``.
"""

import argparse
import pathlib
import sys
import textwrap

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

import psmpi  # noqa: E402
from psmpi.cli import build_parser  # noqa: E402

project = "psmpi"
author = "the psmpi developers"
release = psmpi.__version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "reference/cli-help.md.in"]
myst_heading_anchors = 4
napoleon_google_docstring = False
napoleon_numpy_docstring = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "furo"
html_title = f"psmpi {release}"



def wrapped(text: str, width: int = 88) -> str:
    """Help text with its long lines (descriptions argparse leaves unwrapped) wrapped to fit
    the page, each continuation indented as its line."""
    out = []
    for line in text.rstrip().splitlines():
        indent = " " * (len(line) - len(line.lstrip()))
        out.append(textwrap.fill(line, width, subsequent_indent=indent) if len(line) > width
                   else line)
    return "\n".join(out)


def cli_help_page() -> str:
    """Every command's ``--help``, as ``psmpi`` prints it."""
    parser = build_parser()
    out = ["# `psmpi` command reference", "",
           "Generated from the command's own parsers: the same text as `psmpi COMMAND --help`.",
           "", "```text", wrapped(parser.format_help()), "```", ""]
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        out += [f"## `psmpi {name}`", "", "```text", wrapped(sub.format_help()), "```", ""]
    return "\n".join(out)


def write_cli_help(app) -> None:
    target = HERE / "reference" / "cli-help.md"
    text = cli_help_page()
    if not target.exists() or target.read_text() != text:  # unchanged: no rebuild
        target.write_text(text)


def setup(app):
    app.connect("builder-inited", write_cli_help)
highlight_language = "none"  # a fence without a language is text (layouts, output), not Python
