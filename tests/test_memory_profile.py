"""The memory profile: what a card of each size gets in its graph, and what the probe and results say."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from request_cases import CASE_IDS, CASES, case_input, make_case_media

import handler as handler_module
from infinitetalk_worker.config import REPO_ROOT, Settings, SettingsError, load_settings
from infinitetalk_worker.memory_profile import PROFILE_NAMES, choose_profile, gpu_vram_gib
from infinitetalk_worker.node_lock import (
    DEFAULT_LOCK_PATH,
    DEFAULT_MANIFEST_PATH,
    load_lock,
    load_model_index,
    validate_graph,
)
from infinitetalk_worker.pipeline import render

WORKFLOWS = REPO_ROOT / "workflows"
MIB = 1024 * 1024
LOCK = load_lock(DEFAULT_LOCK_PATH)
MODELS = load_model_index(DEFAULT_MANIFEST_PATH)


def system_stats(name: str, vram_mib: int, device_type: str = "cuda") -> dict:
    """A ComfyUI v0.3.64 ``GET /system_stats`` answer for one device (total memory as CUDA reports it)."""
    return {
        "system": {"os": "posix", "ram_total": 270_000_000_000, "ram_free": 250_000_000_000,
                   "comfyui_version": "0.3.64", "python_version": "3.12.3", "pytorch_version": "2.8.0+cu128",
                   "embedded_python": False, "argv": ["main.py"]},
        "devices": [{"name": name, "type": device_type, "index": 0, "vram_total": vram_mib * MIB,
                     "vram_free": vram_mib * MIB - 500 * MIB, "torch_vram_total": 0, "torch_vram_free": 0}],
    }


CARD_24 = system_stats("cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", 24_564)
CARD_48 = system_stats("cuda:0 NVIDIA RTX A6000 : cudaMallocAsync", 48_677)
CARD_L40S = system_stats("cuda:0 NVIDIA L40S : cudaMallocAsync", 45_589)  # sold as 48 GB, reports 44.5 GiB
CARD_80 = system_stats("cuda:0 NVIDIA A100-SXM4-80GB : cudaMallocAsync", 81_051)
CPU_ONLY = system_stats("cpu", 64_000, device_type="cpu")  # ComfyUI --cpu lists the RAM as the device


def graph_for(card: dict | None, tmp_path: Path, setting: str = "auto", **request) -> dict:
    """The graph ``render`` gives an I2V job on that card: the nodes a user would look at, by class."""
    media = make_case_media(tmp_path / "inputs")
    settings = load_settings({"ALLOWED_INPUT_ROOTS": str(tmp_path), "MEMORY_PROFILE": setting})
    vram = gpu_vram_gib(card) if card else None
    (tmp_path / "job").mkdir()
    graph = render({"image_path": media["image_path"], "wav_path": media["wav_path"], **request}, settings,
                   tmp_path / "job", vram).graph
    return {node["class_type"]: node["inputs"] for node in graph.values()}


@pytest.mark.parametrize("card, profile", [(CARD_24, "24gb"), (CARD_48, "48gb"), (CARD_L40S, "48gb"),
                                           (CARD_80, "80gb"), (CPU_ONLY, "workflow")])
def test_auto_picks_the_row_for_the_card(card, profile):
    assert choose_profile("auto", card).name == profile


def test_a_24_gb_card_keeps_the_shipped_block_swap(tmp_path):
    nodes = graph_for(CARD_24, tmp_path)
    assert nodes["WanVideoBlockSwap"]["blocks_to_swap"] == 20
    assert nodes["WanVideoModelLoader"]["load_device"] == "offload_device"
    assert nodes["WanVideoSampler"]["force_offload"] is True


def test_a_48_gb_card_swaps_nothing_and_loads_the_model_onto_the_gpu(tmp_path):
    nodes = graph_for(CARD_48, tmp_path)
    assert nodes["WanVideoBlockSwap"]["blocks_to_swap"] == 0
    assert nodes["WanVideoModelLoader"]["load_device"] == "main_device"
    assert nodes["WanVideoSampler"]["force_offload"] is True


def test_an_80_gb_card_also_keeps_the_model_on_the_gpu_between_jobs(tmp_path):
    nodes = graph_for(CARD_80, tmp_path)
    assert nodes["WanVideoBlockSwap"]["blocks_to_swap"] == 0
    assert nodes["WanVideoModelLoader"]["load_device"] == "main_device"
    assert nodes["WanVideoSampler"]["force_offload"] is False
    assert nodes["WanVideoImageToVideoMultiTalk"]["force_offload"] is False


def test_a_16_gb_card_swaps_every_block_and_tiles_the_vae(tmp_path):
    nodes = graph_for(system_stats("cuda:0 NVIDIA RTX A4000", 16_376), tmp_path)
    assert nodes["WanVideoBlockSwap"]["blocks_to_swap"] == 40
    assert nodes["WanVideoImageToVideoMultiTalk"]["tiled_vae"] is True
    assert nodes["WanVideoDecode"]["enable_vae_tiling"] is True


def test_memory_profile_setting_overrides_the_card(tmp_path):
    nodes = graph_for(CARD_80, tmp_path, setting="24gb")
    assert nodes["WanVideoBlockSwap"]["blocks_to_swap"] == 20


def test_the_workflow_profile_keeps_the_workflows_own_values(tmp_path):
    shipped = json.loads((WORKFLOWS / "i2v_single.json").read_text())
    swap = next(n for n in shipped.values() if n["class_type"] == "WanVideoBlockSwap")["inputs"]["blocks_to_swap"]
    assert graph_for(CARD_80, tmp_path, setting="workflow")["WanVideoBlockSwap"]["blocks_to_swap"] == swap


def test_a_requests_own_force_offload_wins_over_the_profile(tmp_path):
    nodes = graph_for(CARD_80, tmp_path, force_offload=True)
    assert nodes["WanVideoSampler"]["force_offload"] is True


@pytest.mark.parametrize("value", ["huge", "24", "auto,48gb"])
def test_a_bad_memory_profile_setting_stops_the_worker_naming_it(value):
    with pytest.raises(SettingsError, match=r"MEMORY_PROFILE=.* must be auto or one of 80gb, 48gb"):
        load_settings({"MEMORY_PROFILE": value})


@pytest.mark.parametrize("profile", [name for name in PROFILE_NAMES if name != "workflow"])
@pytest.mark.parametrize("workflow_dir", [WORKFLOWS, WORKFLOWS / "smoke"], ids=["production", "smoke"])
@pytest.mark.parametrize("kind, people, extra", [c for c in CASES if not c[2]],
                         ids=[i for i, c in zip(CASE_IDS, CASES) if not c[2]])
def test_every_profile_renders_graphs_valid_against_the_lock(tmp_path, profile, workflow_dir, kind, people, extra):
    """The smoke set has no block swap: the profile's values are skipped there, not refused."""
    media = make_case_media(tmp_path / "inputs")
    settings = load_settings({"ALLOWED_INPUT_ROOTS": str(tmp_path), "WORKFLOW_DIR": str(workflow_dir),
                              "MEMORY_PROFILE": profile})
    (tmp_path / "job").mkdir()
    plan = render(case_input(kind, people, extra, media), settings, tmp_path / "job")
    assert [str(p) for p in validate_graph(plan.graph, LOCK, MODELS, "rendered")] == []
    assert plan.memory_profile == profile


def test_render_vram_gb_shows_the_graph_that_card_gets(tmp_path):
    media = make_case_media(tmp_path / "inputs")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"image_path": media["image_path"], "wav_path": media["wav_path"]}))
    env = {"ALLOWED_INPUT_ROOTS": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "infinitetalk_worker", "render", str(request), "--vram-gb", "48"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    swap = next(n for n in json.loads(done.stdout).values() if n["class_type"] == "WanVideoBlockSwap")
    assert swap["inputs"]["blocks_to_swap"] == 0 and "memory profile 48gb" in done.stderr
    refused = subprocess.run([sys.executable, "-m", "infinitetalk_worker", "render", str(request), "--vram-gb",
                              "lots"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--vram-gb must be a positive number of GiB" in refused.stderr


# ---------------------------------------------------------------- through the handler


@pytest.fixture
def production_worker(fake_comfy, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("infinitetalk_worker.progress._runpod_sender", lambda job, payload: None)
    media = make_case_media(tmp_path / "inputs")
    handler_module.reset_worker(Settings(
        comfyui_url=fake_comfy.url, workflow_dir=WORKFLOWS, job_root=tmp_path / "jobs", volume_root=tmp_path / "vol",
        allowed_input_roots=[tmp_path], http_timeout_s=5, ws_idle_timeout_s=1, job_deadline_s=60,
        progress_interval_s=0.0, comfyui_dir=fake_comfy.root))
    yield media
    handler_module.reset_worker(None)


def run(job_input: dict) -> dict:
    return asyncio.run(handler_module.handler({"id": "job-mem", "input": job_input}))


def test_the_probe_and_the_result_report_the_profile_the_card_got(production_worker, fake_comfy):
    fake_comfy.vram_total = CARD_24["devices"][0]["vram_total"]
    assert run({"test": True})["memory_profile"] == "24gb"
    result = run({"image_path": production_worker["image_path"], "wav_path": production_worker["wav_path"]})
    assert "error" not in result, result["error"]
    assert result["memory_profile"] == "24gb"
    submitted = fake_comfy.prompts[-1]["prompt"]
    swap = next(n for n in submitted.values() if n["class_type"] == "WanVideoBlockSwap")
    assert swap["inputs"]["blocks_to_swap"] == 20


def test_an_80_gb_card_submits_no_block_swap(production_worker, fake_comfy):
    result = run({"image_path": production_worker["image_path"], "wav_path": production_worker["wav_path"]})
    assert result["memory_profile"] == "80gb"
    submitted = fake_comfy.prompts[-1]["prompt"]
    assert next(n for n in submitted.values() if n["class_type"] == "WanVideoBlockSwap")["inputs"][
        "blocks_to_swap"] == 0


def test_a_video_too_long_for_the_machines_ram_is_refused_before_comfyui_runs(production_worker, fake_comfy):
    """One 81-frame window at 512x512 holds 81 x 512 x 512 x 3 x 6 bytes = 0.38 GB of decoded frames."""
    fake_comfy.ram_total = 300_000_000
    result = run({"image_path": production_worker["image_path"], "wav_path": production_worker["wav_path"]})
    assert result["error"].startswith("The video would be 20 frames at 512x512, made as 1 window of 81 frames")
    assert "about 0.38 GB, more than this machine's 0.30 GB of RAM" in result["error"]
    assert "Use a smaller width and height." in result["error"]
    assert fake_comfy.prompts == []
    result = run({"image_path": production_worker["image_path"], "wav_path": production_worker["wav_path"],
                  "width": 256, "height": 256})
    assert "error" not in result, result["error"]


def test_a_source_video_too_long_for_the_gpu_is_refused_before_comfyui_runs(production_worker, fake_comfy):
    """WanVideoEncode puts the whole clip on the GPU: 20 frames x 512 x 512 x 3 x 4 bytes = 63 MB."""
    fake_comfy.vram_total = 50_000_000
    result = run({"input_type": "video", "video_path": production_worker["video_path"],
                  "wav_path": production_worker["wav_path"]})
    assert "WanVideoEncode moves the whole source clip to the GPU at once, about 0.06 GB, more than the GPU's " \
           "0.05 GB. At this size at most 15 frames (0.6 s) fit" in result["error"]
    assert fake_comfy.prompts == []


def test_the_readme_memory_table_is_the_code_s():
    """Each row of the README's memory table says what PROFILES holds."""
    from infinitetalk_worker.memory_profile import PROFILES

    text = (REPO_ROOT / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `"): [c.strip(" `") for c in line.split("|")[2:8]]
            for line in text.splitlines() if line.startswith("| `") and "gb` |" in line.split("|")[1] + "|"}
    for p in PROFILES:
        shown = rows[p.name]
        threshold = f"{p.min_vram_gib:g} GiB" if p.min_vram_gib else "any smaller card"
        assert shown[:5] == [threshold, str(p.blocks_to_swap), p.load_device, str(p.force_offload).lower(),
                             "on" if p.tiled_vae else "off"], p.name
