"""The pipeline as RunPod sees it through the handler: probe, missing models, stand-in runs, render.

Against the fake ComfyUI (testsupport/fake_comfyui.py) with the CPU smoke set, as the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import wave
from dataclasses import replace
from pathlib import Path

import pytest

import handler as handler_module
from infinitetalk_worker.config import REPO_ROOT, Settings
from infinitetalk_worker.pipeline import Pipeline, StartupState
from testsupport.media_factory import make_image, make_wav
from testsupport.waiting import wait_until

SMOKE = REPO_ROOT / "workflows" / "smoke"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    make_image(folder / "face.png", (160, 120))
    make_wav(folder / "voice.wav", 1.5)
    return folder


@pytest.fixture
def settings(fake_comfy, tmp_path: Path, inputs: Path) -> Settings:
    return Settings(
        comfyui_url=fake_comfy.url, workflow_dir=SMOKE, job_root=tmp_path / "jobs", volume_root=tmp_path / "volume",
        allowed_input_roots=[inputs], http_timeout_s=5, ws_idle_timeout_s=1, job_deadline_s=30,
        progress_interval_s=0.0, comfyui_dir=fake_comfy.root,
    )


def run(job_input, job_id: str = "job-1") -> dict:
    return asyncio.run(handler_module.handler({"id": job_id, "input": job_input}))


def job(inputs: Path, **extra) -> dict:
    return {"image_path": str(inputs / "face.png"), "wav_path": str(inputs / "voice.wav"), "width": 128,
            "height": 128, **extra}


@pytest.fixture(autouse=True)
def reset():
    yield
    handler_module.reset_worker(None)


@pytest.mark.parametrize("value", [True, "true", "True", " TRUE "])
def test_every_true_test_value_is_the_probe_and_runs_no_job(settings, fake_comfy, value):
    handler_module.reset_worker(settings)
    answer = run({"test": value})
    assert answer["ready"] is True and "video" not in answer
    assert fake_comfy.prompts == []


def test_a_false_test_value_runs_the_job(settings, inputs):
    handler_module.reset_worker(settings)
    assert "video" in run({**job(inputs), "test": "false"})


def test_a_worker_without_models_says_so_and_fails_jobs_in_one_sentence(settings, inputs, fake_comfy):
    missing = ["Wan2_1_VAE_bf16.safetensors (vae)", "clip_vision_h.safetensors (clip_vision)"]
    handler_module.reset_worker(settings, StartupState(missing_models=missing))
    probe = run({"test": True})
    assert probe["ready"] is False and probe["missing_models"] == missing
    error = run(job(inputs))["error"]
    assert "Wan2_1_VAE_bf16.safetensors" in error and "download-models" in error and "/runpod-volume/models" in error
    assert fake_comfy.prompts == []
    assert "error" in run(job(inputs), "job-2")  # still serving, still refusing


def test_a_stand_in_run_warns_and_lists_its_graph_changes(settings, inputs):
    handler_module.reset_worker(replace(settings, allow_standin_models=True))
    result = run(job(inputs))
    assert "video" in result
    assert any("stand-in model weights" in w for w in result["warnings"])
    # the smoke set has neither a WanVideo VAE loader nor the cached text encoder: nothing to change
    assert "graph_changes" not in result


def test_without_the_setting_there_is_no_stand_in_warning(settings, inputs):
    handler_module.reset_worker(settings)
    assert "warnings" not in run(job(inputs))


def test_production_graphs_on_stand_ins_get_exactly_the_cpu_changes(tmp_path, inputs, monkeypatch):
    written = []
    monkeypatch.setattr("infinitetalk_worker.standin_graph._cache_prompts",
                        lambda node_inputs, s: written.append(node_inputs["positive_prompt"]) or [Path("x.pt")])
    settings = Settings(workflow_dir=REPO_ROOT / "workflows", allowed_input_roots=[inputs], job_root=tmp_path,
                        allow_standin_models=True, comfyui_dir=tmp_path)
    pipeline = Pipeline(settings)
    from infinitetalk_worker.request import parse_request

    (tmp_path / "job").mkdir()
    plan = pipeline.plan(parse_request(job(inputs, prompt="hello there"), 2000), tmp_path / "job")
    baseline = json.loads((REPO_ROOT / "workflows" / "i2v_single.json").read_text())
    changed = {(node_id, name) for node_id, node in plan.graph.items() for name, value in node["inputs"].items()
               if baseline[node_id]["inputs"].get(name) != value and node["class_type"] in
               ("WanVideoVAELoader", "WanVideoTextEncodeCached") and name not in ("positive_prompt", "negative_prompt")}
    assert {name for _, name in changed} == {"precision", "use_disk_cache"}
    assert len(plan.graph_changes) == 2 and written == ["hello there"]


def test_stand_in_cache_needs_the_comfyui_folder(tmp_path, inputs):
    settings = Settings(workflow_dir=REPO_ROOT / "workflows", allowed_input_roots=[inputs], job_root=tmp_path,
                        allow_standin_models=True)
    from infinitetalk_worker.errors import WorkerError
    from infinitetalk_worker.request import parse_request

    with pytest.raises(WorkerError, match="COMFYUI_DIR"):
        (tmp_path / "job").mkdir()
        Pipeline(settings).plan(parse_request(job(inputs), 2000), tmp_path / "job")


def test_render_prints_the_graph_and_its_frame_count(tmp_path, inputs):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"input": job(inputs)}))
    env = {"ALLOWED_INPUT_ROOTS": str(inputs), "WORKFLOW_DIR": str(REPO_ROOT / "workflows"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "infinitetalk_worker", "render", str(request)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    graph = json.loads(done.stdout)
    embeds = next(n for n in graph.values() if n["class_type"] == "MultiTalkWav2VecEmbeds")
    assert embeds["inputs"]["num_frames"] == 37  # 1.5 s of audio, as the node truncates
    assert "i2v_single.json: 128x128, 37 frames" in done.stderr and "steps 6" in done.stderr


def test_the_result_comes_from_the_websocket_and_the_shared_disk(settings, inputs, fake_comfy):
    """The video is taken on the output node's message, from ComfyUI's folder: the job does not wait for
    the prompt's end (execution_success, history), which in ComfyUI can wait behind its gc.collect()."""
    handler_module.reset_worker(settings)
    fake_comfy.finish_gate = threading.Event()
    try:
        result = run(job(inputs))
        assert "video" in result and result["frames"] == 37
        assert result["timings"]["comfyui_execution_s"] >= 0
        assert not fake_comfy.idle and not fake_comfy.history  # the prompt had not ended when the job answered
    finally:
        fake_comfy.finish_gate.set()
    assert not any(path.startswith("/view") for _, path in fake_comfy.requests)


def test_the_history_entry_is_deleted_once_comfyui_writes_it(settings, inputs, fake_comfy):
    """A long-lived ComfyUI keeps no entry per job, also when it writes the entry after the job answered."""
    handler_module.reset_worker(settings)
    fake_comfy.finish_gate = threading.Event()
    assert "video" in run(job(inputs))
    time.sleep(0.3)  # the deletion is asked for meanwhile, before the entry exists
    fake_comfy.finish_gate.set()
    wait_until(lambda: fake_comfy.idle, 10, "the prompt's end (its entry written)")
    wait_until(lambda: not fake_comfy.history, 10, "the prompt's history entry deleted")


def test_without_the_websocket_the_history_still_gives_the_result(settings, inputs, fake_comfy, monkeypatch):
    import websocket

    def refuse(*args, **kwargs):
        raise OSError("no websocket here")

    monkeypatch.setattr(websocket, "create_connection", refuse)
    handler_module.reset_worker(settings)
    result = run(job(inputs))
    assert "video" in result and result["frames"] == 37  # found by polling /history


def test_render_prints_the_speaker_regions_and_where_they_came_from(tmp_path, inputs):
    photo = REPO_ROOT / "tests" / "data" / "faces" / "two_people.jpg"
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"input": {"person_count": "multi", "image_path": str(photo),
                                             "wav_path": str(inputs / "voice.wav"),
                                             "wav_path_2": str(inputs / "voice.wav"), "width": 640, "height": 368}}))
    env = {"ALLOWED_INPUT_ROOTS": f"{inputs}:{photo.parent}", "WORKFLOW_DIR": str(REPO_ROOT / "workflows"),
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "infinitetalk_worker", "render", str(request)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if "speaker_boxes" in line)
    assert line.startswith("  speaker_boxes (auto): [[0.1289, 0.0, 0.44") and "0.9328, 0.6005]]" in line


@pytest.mark.parametrize("workflows", [REPO_ROOT / "workflows", SMOKE])
def test_a_single_speaker_video_gets_the_voice_as_a_48_khz_soundtrack(tmp_path, inputs, workflows):
    # At the upload's 16 kHz, VideoHelperSuite's mux (apad, -shortest, AAC) made the rehearsal's soundtrack
    # 1.728 s long for 1.5 s of speech; at 48 kHz it ends within a frame of the picture.
    from infinitetalk_worker.pipeline import render

    settings = Settings(workflow_dir=workflows, allowed_input_roots=[inputs], job_root=tmp_path)
    (tmp_path / "job").mkdir()
    plan = render(job(inputs), settings, tmp_path / "job")

    combine = next(node for node in plan.graph.values() if node["class_type"] == "VHS_VideoCombine")
    source = plan.graph[combine["inputs"]["audio"][0]]
    assert source["class_type"] == "LoadAudio"
    with wave.open(source["inputs"]["audio"]) as track:
        assert (track.getframerate(), track.getnchannels()) == (48000, 2)
        assert track.getnframes() / 48000 == pytest.approx(1.5, abs=1 / 48000)
