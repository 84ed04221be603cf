"""Quality presets: the README's cost table is what the presets and WanVideoWrapper's pass count give."""

from __future__ import annotations

import re

from infinitetalk_worker.config import REPO_ROOT
from infinitetalk_worker.presets import QUALITY, evaluations_per_window, passes_per_step


def readme_presets() -> dict[str, list[str]]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = re.search(r"<!-- presets:begin -->\n(.*?)<!-- presets:end -->", text, re.S).group(1)
    rows = [line.strip("|").split("|") for line in table.strip().splitlines()[2:]]
    return {cells[0].strip().strip("`"): [c.strip() for c in cells[1:]] for cells in rows}


def test_the_readme_lists_every_preset_with_its_cost_per_window():
    table = readme_presets()
    assert set(table) == set(QUALITY)
    for name, cells in table.items():
        assert cells[-2:] == [str(evaluations_per_window(name, "image")), str(evaluations_per_window(name, "video"))]
        assert cells[4] == ("yes" if QUALITY[name].distill_lora else "no")


def test_passes_per_step_follow_the_samplers_guidance_rules():
    assert passes_per_step(1.0, 1.0) == 1
    assert passes_per_step(1.0, 4.0) == 1  # audio guidance is only computed together with text guidance
    assert passes_per_step(5.0, 1.0) == 2
    assert passes_per_step(5.0, 4.0) == 3
