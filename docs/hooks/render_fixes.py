"""MkDocs hook: two rendering fixes for text written for the terminal and for Sphinx.

- The command-line reference (mkdocs-click) renders each command's help as Markdown, where a
  placeholder such as ``<study>`` (in ``study <study>-confirm``) would be taken for an HTML tag and
  vanish: it is escaped.
- A few docstrings use Sphinx roles (``:class:`RunConfig```); the API reference (mkdocstrings,
  Markdown) would print the role name before the code: the role name is dropped.

The help texts and docstrings read well where they are written (``--help``, ``help()``), so the
fixes belong here rather than in the code.
"""
from __future__ import annotations

import re

CLI_PAGE = "reference/cli.md"
PLACEHOLDER = re.compile(r"<(study|space|trial|epoch)>")
SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):(?=<code>)")


def on_page_content(html, page, config, files):
    if page.file.src_uri == CLI_PAGE:
        html = PLACEHOLDER.sub(r"&lt;\1&gt;", html)
    if page.file.src_uri.startswith("reference/api/"):
        html = SPHINX_ROLE.sub("", html)
    return html
