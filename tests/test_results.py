"""Every table in docs/results.md is what `dnrt compare` builds from the committed summaries."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dnrt_core.compare import build_table, load_summaries

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results.md"
MARKER = re.compile(
    r"<!-- table: (?P<dir>\S+)(?P<opts>[^>]*)-->\n(?P<table>.*?)<!-- /table -->", re.S
)


def _tables() -> list[tuple[str, dict[str, str], str]]:
    text = RESULTS.read_text()
    found = []
    for m in MARKER.finditer(text):
        opts = dict(kv.split("=", 1) for kv in m.group("opts").split())
        found.append((m.group("dir"), opts, m.group("table")))
    return found


def test_results_doc_has_tables():
    assert RESULTS.is_file()
    assert len(_tables()) >= 1
    assert "docs/results.md" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("entry", _tables() if RESULTS.is_file() else [], ids=lambda e: e[0])
def test_table_matches_summaries(entry):
    folder, opts, table = entry
    summaries = load_summaries(REPO / folder)
    assert summaries, f"no summary.json under {folder}"
    rebuilt = build_table(summaries, metric=opts.get("metric"), which=opts.get("which", "final"))
    assert table.strip() == rebuilt.to_markdown().strip()
