"""The worker's version and its changelog agree (infinitetalk_worker/__init__.py, CHANGELOG.md)."""

from __future__ import annotations

import re
from pathlib import Path

from infinitetalk_worker import __version__

CHANGELOG = Path(__file__).resolve().parents[1] / "CHANGELOG.md"


def versions() -> list[str]:
    return re.findall(r"^## (\d+\.\d+\.\d+)\b", CHANGELOG.read_text(encoding="utf-8"), re.MULTILINE)


def test_the_newest_changelog_entry_is_the_version_the_worker_reports():
    assert versions()[0] == __version__


def test_each_version_has_one_entry_newest_first():
    found = [tuple(map(int, v.split("."))) for v in versions()]
    assert len(set(found)) == len(found) and found == sorted(found, reverse=True)
