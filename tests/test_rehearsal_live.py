"""Opt-in: ``rehearse --cases quick`` against a real ComfyUI whose model folders hold the stand-ins.

Runs when a ComfyUI with ComfyUI-WanVideoWrapper answers at COMFYUI_URL, REHEARSAL_MODELS_DIR names the
folder ``standins`` wrote, and COMFYUI_DIR names that ComfyUI's folder (for the prompt-embedding cache);
skipped otherwise, so CI stays without ComfyUI. On this 2-core machine it takes about half an hour.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from infinitetalk_worker.config import load_settings
from infinitetalk_worker.rehearsal import CASES, rehearse
from tests.live_comfyui import COMFYUI_URL, comfyui_answers, live_object_info

MODELS_DIR = os.environ.get("REHEARSAL_MODELS_DIR", "")

pytestmark = pytest.mark.skipif(
    not (MODELS_DIR and os.environ.get("COMFYUI_DIR") and comfyui_answers(COMFYUI_URL)
         and "WanVideoSampler" in live_object_info(COMFYUI_URL)),
    reason="set COMFYUI_URL (a ComfyUI with WanVideoWrapper), COMFYUI_DIR and REHEARSAL_MODELS_DIR to rehearse",
)


def test_the_models_folder_holds_stand_ins():
    from infinitetalk_worker.standins import is_standin

    files = [p for p in Path(MODELS_DIR).rglob("*.safetensors")]
    assert files and all(is_standin(p) for p in files)


def test_quick_rehearsal_passes_for_every_workflow():
    out = io.StringIO()
    outcomes = rehearse(load_settings(), COMFYUI_URL, [c for c in CASES if c.quick], False, out)
    assert [o.case.name for o in outcomes if not o.passed] == [], out.getvalue()
    assert len(outcomes) == 4
