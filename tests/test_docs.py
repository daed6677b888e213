"""The project's documents point at what the project has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")  # a Markdown link's target, without its anchor


@pytest.mark.parametrize("name", ["README.md", "BENCHMARKS.md"])
def test_relative_links_name_files_of_the_repository(name):
    text = (ROOT / name).read_text()
    targets = [t for t in LINK.findall(text) if "://" not in t and not t.startswith("mailto:")]
    outside = [t for t in targets if not (ROOT / t).resolve().is_relative_to(ROOT)]
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert (outside, missing) == ([], []), (outside, missing)
