"""Every results table in docs/results.md and the README is what `dnrt compare` builds from the
committed summaries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dnrt_core.tools.compare import build_table, load_summaries

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results.md"
README = REPO / "README.md"
MARKER = re.compile(
    r"<!-- table: (?P<dir>\S+)(?P<opts>[^>]*)-->\n(?P<table>.*?)<!-- /table -->", re.S
)


def _tables(doc: Path = RESULTS) -> list[tuple[str, dict[str, str], str]]:
    found = []
    for m in MARKER.finditer(doc.read_text()):
        opts = dict(kv.split("=", 1) for kv in m.group("opts").split())
        found.append((m.group("dir"), opts, m.group("table")))
    return found


def _all_tables() -> list[tuple[str, dict[str, str], str]]:
    return [
        (f"{doc.name}:{folder}", opts, table)
        for doc in (RESULTS, README)
        if doc.is_file()
        for folder, opts, table in _tables(doc)
    ]


def test_results_doc_has_tables():
    assert RESULTS.is_file()
    assert len(_tables()) >= 1
    assert "docs/results.md" in (REPO / "README.md").read_text()


def test_readme_tables_are_in_results_doc():
    in_doc = {(folder, tuple(sorted(opts.items()))) for folder, opts, _ in _tables()}
    for folder, opts, _ in _tables(README):
        assert (folder, tuple(sorted(opts.items()))) in in_doc, f"README table {folder} not in docs"


@pytest.mark.parametrize("entry", _all_tables(), ids=lambda e: e[0])
def test_table_matches_summaries(entry):
    doc_and_folder, opts, table = entry
    folder = doc_and_folder.split(":", 1)[1]
    summaries = load_summaries(REPO / folder)
    assert summaries, f"no summary.json under {folder}"
    rebuilt = build_table(
        summaries,
        metric=opts.get("metric"),
        which=opts.get("which", "final"),
        rows=opts.get("rows", "model"),
        cols=opts.get("cols", "mechanism"),
    )
    assert table.strip() == rebuilt.to_markdown().strip()
