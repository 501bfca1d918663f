"""MkDocs hook: publish the repository's committed evidence next to the pages.

Result pages link to the files that produced their figures (logs, JSON, CSV, run scripts, the
plotly ``.html`` plots) and to the benchmark scripts. Those files live outside ``docs/``, so a
plain relative link would be a broken link for ``mkdocs build --strict``. This hook adds every
committed file under ``PUBLISHED`` to the build as ``repo/<path in the repository>``: pages link
to them as ``../repo/results/...`` (resolved and checked by MkDocs like any other link), and the
built site carries a copy. Only files tracked by git are published (so ignored outputs such as
``results/**/model.safetensors`` never are); Markdown files are left out (they would become pages).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from mkdocs.structure.files import File, InclusionLevel

PUBLISHED = ("results", "benchmarks", ".ci", "hovit_nas/spaces", "studies")
PREFIX = "repo"


def _tracked(root: Path) -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *PUBLISHED], cwd=root, capture_output=True,
                             check=True).stdout.decode()
        return sorted(p for p in out.split("\0") if p)
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file there
        return sorted(p.relative_to(root).as_posix() for d in PUBLISHED for p in (root / d).rglob("*") if p.is_file())


def on_files(files, config):
    root = Path(config.config_file_path).parent
    for rel in _tracked(root):
        path = root / rel
        if path.suffix == ".md" or not path.is_file():
            continue
        f = File.generated(config, f"{PREFIX}/{rel}", abs_src_path=str(path))
        f.inclusion = InclusionLevel.INCLUDED  # also dot-folders such as .ci/, which MkDocs skips by default
        files.append(f)
    return files
