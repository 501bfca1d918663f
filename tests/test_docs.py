"""The README stays a short entry point that keeps its promises, and the docs site covers what it must.

The site itself is checked by ``mkdocs build --strict`` in .ci/run (links, anchors, the API and CLI
reference); these checks are the ones a strict build cannot make.
"""
import re

from conftest import ROOT

README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()
TEST_COMMAND = ".venv/bin/python -m pytest tests -n 2 -v --durations=15"
QUICK_START = (
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/hovit-nas search --space hovit",
    "bash .ci/run",
)


def test_readme_is_short():
    assert len(README.splitlines()) <= 250


def test_readme_states_the_test_command_that_ci_ends_with():
    assert f"```bash\n{TEST_COMMAND}\n```" in README
    last = [line for line in CI.splitlines() if line.strip() and not line.startswith("#")][-1]
    assert last == TEST_COMMAND


def test_readme_keeps_the_quick_start_commands_and_their_measured_time():
    for command in QUICK_START:
        assert f"\n{command}\n" in README, command
    assert re.search(r"quick start took \*\*[^*]+ of install .* for the search\*\*", README, re.S)


def test_ci_builds_the_docs_strictly_before_the_tests():
    build = CI.index("mkdocs build --strict")
    assert CI.index("import hovit_nas") < build < CI.index(TEST_COMMAND)


def test_readme_links_to_files_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if "://" not in link]
    assert local, "the README links to the docs"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


def test_every_results_folder_has_a_docs_page():
    folders = {p.name for p in (ROOT / "results").iterdir() if p.is_dir()}
    pages = {p.stem for p in (ROOT / "docs" / "results").glob("*.md")}
    assert folders <= pages, sorted(folders - pages)


def test_data_guide_has_the_scanning_policy_section():
    assert "\n## Scanning policy and accepted inputs\n" in (ROOT / "docs" / "guides" / "data.md").read_text()


def test_code_blocks_wrap_and_results_pages_embed_their_plots():
    """Issue 30: a long command is never cut off at a code block's right edge (lines wrap and hang
    under their start), and a results page shows the plotly plot it links to (an iframe; strict
    mode does not check an iframe's address, so this does)."""
    config = (ROOT / "mkdocs.yml").read_text()
    css = (ROOT / "docs" / "stylesheets" / "extra.css").read_text()
    assert "extra_css:\n  - stylesheets/extra.css" in config and "line_spans: __span" in config
    assert re.search(r"pre > code \{[^}]*white-space: pre-wrap;", css)
    assert re.search(r'span\[id\^="__span-"\] \{[^}]*display: inline-block;[^}]*text-indent: -', css)
    embedded = 0
    for page in sorted((ROOT / "docs" / "results").glob("*.md")):
        text = page.read_text()
        plots = set(re.findall(r"\]\(\.\./repo/(results/[^)]+\.html)\)", text))
        frames = set(re.findall(r'<iframe class="plot" src="\.\./repo/(results/[^"]+\.html)"', text))
        assert plots == frames, page.name
        assert all((ROOT / f).is_file() for f in frames), page.name
        embedded += len(frames)
    assert embedded >= 7


def test_evidence_script_regenerates_every_results_folder_without_machine_paths():
    """Issue 31: results/evidence.sh has one entry per results folder, and no path of one machine."""
    text = (ROOT / "results" / "evidence.sh").read_text()
    folders = {p.name for p in (ROOT / "results").iterdir() if p.is_dir()}
    entries = re.findall(r"^run ([\w.-]+) ", text, re.M)
    assert sorted(entries) == sorted(folders) and len(entries) == len(set(entries))
    assert "/work/" not in text and "/tmp/" not in text
