"""The production workflows against a REAL ComfyUI of the pinned stack: checked at start, accepted by /prompt.

Skipped unless a ComfyUI answers at ``COMFYUI_URL`` (default http://127.0.0.1:8188) with
ComfyUI-WanVideoWrapper loaded. That ComfyUI must run on this machine (the worker hands it absolute
file paths) with the custom nodes of design §5 at their pinned commits and every file of
``workflows/models.json`` in its model folders. Validation of a prompt reads model names, not
weights, so for this test alone files of those names will do; then each accepted prompt fails at its
first model loader, which is expected. With the real files on a GPU, each prompt is stopped as soon
as it is accepted.

What it proves is issue 3's last check: every graph the worker renders, for every kind of request
and option, is answered ``200`` with empty ``node_errors`` by the real node implementations.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from live_comfyui import COMFYUI_URL, comfyui_answers, live_object_info  # noqa: E402
from request_cases import CASE_IDS, CASES, OPTION_CASE_IDS, OPTION_CASES, case_input, make_case_media  # noqa: E402,E501

from infinitetalk_worker.comfy_client import ComfyClient, describe_rejection  # noqa: E402
from infinitetalk_worker.config import load_settings  # noqa: E402
from infinitetalk_worker.pipeline import render  # noqa: E402
from infinitetalk_worker.startup_checks import run_startup_checks  # noqa: E402

WORKFLOWS = REPO_ROOT / "workflows"


def _has_wanvideowrapper(url: str) -> bool:
    return comfyui_answers(url) and "WanVideoSampler" in live_object_info(url)


pytestmark = pytest.mark.skipif(
    not _has_wanvideowrapper(COMFYUI_URL),
    reason=f"no ComfyUI with ComfyUI-WanVideoWrapper answers at {COMFYUI_URL} (set COMFYUI_URL to run)",
)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_case_media(tmp_path_factory.mktemp("production-inputs"))


@pytest.fixture(scope="module")
def client() -> ComfyClient:
    return ComfyClient(COMFYUI_URL, http_timeout_s=30)


def test_start_up_checks_pass_for_the_production_set():
    # ALLOW_STANDIN_MODELS=true from the environment when the model folders hold the rehearsal's stand-ins.
    allow = os.environ.get("ALLOW_STANDIN_MODELS", "false")
    run_startup_checks(load_settings({"COMFYUI_URL": COMFYUI_URL, "WORKFLOW_DIR": str(WORKFLOWS),
                                      "ALLOW_STANDIN_MODELS": allow}))


@pytest.mark.parametrize("kind, people, extra", CASES + OPTION_CASES, ids=CASE_IDS + OPTION_CASE_IDS)
def test_rendered_graph_is_accepted_by_prompt(tmp_path, media, client, kind, people, extra):
    _accepted(render(case_input(kind, people, extra, media), _settings(media), tmp_path).graph, client)


@pytest.mark.parametrize("vram_gb", [16, 24, 32, 48, 80])
@pytest.mark.parametrize("kind, people", [("image", "single"), ("video", "multi")])
def test_the_graph_of_each_memory_profile_is_accepted_by_prompt(tmp_path, media, client, kind, people, vram_gb):
    _accepted(render(case_input(kind, people, {}, media), _settings(media), tmp_path, vram_gb).graph, client)


def _settings(media: dict[str, str]):
    return load_settings({"ALLOWED_INPUT_ROOTS": str(Path(media["wav_path"]).parent), "WORKFLOW_DIR": str(WORKFLOWS)})


def _accepted(graph: dict, client: ComfyClient) -> None:
    """POST /prompt answers 200 with no node errors; the prompt is then stopped at once."""
    prompt_id = str(uuid.uuid4())

    response = requests.post(f"{COMFYUI_URL}/prompt", timeout=60,
                             json={"prompt": graph, "client_id": f"acceptance-{prompt_id[:8]}", "prompt_id": prompt_id})
    try:
        body = response.json()
        assert response.status_code == 200, describe_rejection(body)
        assert body["node_errors"] == {}, describe_rejection(body)
        assert body["prompt_id"] == prompt_id
    finally:
        _stop(client, prompt_id)


def _stop(client: ComfyClient, prompt_id: str) -> None:
    """Dequeue or interrupt the prompt, wait until ComfyUI is done with it, and drop its history."""
    client.interrupt(prompt_id)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _in_queue(prompt_id):
        time.sleep(0.5)
        client.interrupt(prompt_id)
    client.forget(prompt_id)


def _in_queue(prompt_id: str) -> bool:
    queue: dict[str, Any] = requests.get(f"{COMFYUI_URL}/queue", timeout=30).json()
    return any(item[1] == prompt_id for key in ("queue_running", "queue_pending") for item in queue.get(key, []))
