"""The handler end to end against the fake ComfyUI: every kind of job, every failure a user can meet."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

import handler as handler_module
from infinitetalk_worker.config import REPO_ROOT, Settings
from testsupport.media_factory import make_image, make_video, make_wav, probe

SMOKE = REPO_ROOT / "workflows" / "smoke"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    make_image(folder / "face.png", (160, 120))
    make_wav(folder / "voice.wav", 1.0)
    make_wav(folder / "voice2.wav", 1.6, frequency=330)
    make_video(folder / "clip.mp4", 2.0, (96, 64))
    return folder


@pytest.fixture
def settings(fake_comfy, tmp_path: Path, inputs: Path) -> Settings:
    return Settings(
        comfyui_url=fake_comfy.url, workflow_dir=SMOKE, job_root=tmp_path / "jobs", volume_root=tmp_path / "volume",
        allowed_input_roots=[inputs], http_timeout_s=5, ws_idle_timeout_s=1, job_deadline_s=30,
        progress_interval_s=0.0, comfyui_dir=fake_comfy.root,
    )


@pytest.fixture
def progress_updates(monkeypatch):
    sent = []
    monkeypatch.setattr("infinitetalk_worker.progress._runpod_sender", lambda job, payload: sent.append(payload))
    return sent


@pytest.fixture(autouse=True)
def worker(settings, progress_updates):
    handler_module.reset_worker(settings)
    yield
    handler_module.reset_worker(None)


def run(job_input: dict, job_id: str = "job-1") -> dict:
    return asyncio.run(handler_module.handler({"id": job_id, "input": job_input}))


def decoded(result: dict, tmp_path: Path) -> dict:
    assert "error" not in result, result.get("error")
    out = tmp_path / f"result-{time.monotonic_ns()}.mp4"
    out.write_bytes(base64.b64decode(result["video"], validate=True))
    return probe(out)


def single(inputs: Path, **extra) -> dict:
    return {"image_path": str(inputs / "face.png"), "wav_path": str(inputs / "voice.wav"), "width": 128,
            "height": 128, **extra}


def test_image_single_returns_a_playable_mp4_with_the_requests_audio(inputs, tmp_path, progress_updates):
    result = run(single(inputs, seed=42, prompt="a friendly face"))
    video = decoded(result, tmp_path)
    assert (video["width"], video["height"], video["fps"]) == (128, 128, 25.0)
    assert video["frames"] == 25 and video["audio_seconds"] == pytest.approx(1.0, abs=0.1)
    assert (result["seed"], result["frames"], result["workflow"], result["delivered_as"]) == \
        (42, 25, "i2v_single.json", "base64")
    assert {"duration_s", "fps", "width", "height", "timings"} <= result.keys()
    assert progress_updates and progress_updates[0] == {"stage": "preparing inputs"}


def test_seed_is_random_when_absent_and_always_reported(inputs, tmp_path):
    first, second = run(single(inputs)), run(single(inputs))
    assert isinstance(first["seed"], int) and first["seed"] != second["seed"]


def test_base64_with_data_uri_and_plain_base64_inputs(inputs, tmp_path):
    image = base64.b64encode((inputs / "face.png").read_bytes()).decode()
    audio = base64.b64encode((inputs / "voice2.wav").read_bytes()).decode()
    result = run({"image_base64": "data:image/png;base64," + image, "wav_base64": audio, "width": 160, "height": 128})
    video = decoded(result, tmp_path)
    assert (video["width"], video["height"], video["frames"]) == (160, 128, 40)
    assert video["audio_seconds"] == pytest.approx(1.6, abs=0.1)


def test_video_single_uses_the_videos_frames_under_the_new_audio(inputs, tmp_path):
    result = run({"input_type": "video", "video_path": str(inputs / "clip.mp4"), "wav_path": str(inputs / "voice.wav"),
                  "width": 160, "height": 128})
    video = decoded(result, tmp_path)
    assert (video["width"], video["height"], video["frames"]) == (160, 128, 25)
    assert result["workflow"] == "v2v_single.json"


@pytest.mark.parametrize("mode,seconds", [("para", 1.6), ("add", 2.6)])
def test_two_speakers_share_the_soundtrack(inputs, tmp_path, mode, seconds):
    result = run({**single(inputs), "person_count": "multi", "wav_path_2": str(inputs / "voice2.wav"),
                  "multi_audio_type": mode, "speaker_boxes": [[0, 0, 0.4, 1], [0.6, 0, 1, 1]]})
    video = decoded(result, tmp_path)
    assert video["frames"] == round(seconds * 25)
    assert video["audio_seconds"] == pytest.approx(seconds, abs=0.1)


def test_video_multi_runs(inputs, tmp_path):
    result = run({"input_type": "video", "person_count": "multi", "video_path": str(inputs / "clip.mp4"),
                  "wav_path": str(inputs / "voice.wav"), "wav_path_2": str(inputs / "voice2.wav"), "width": 160,
                  "height": 128})
    assert decoded(result, tmp_path)["frames"] == 40 and result["workflow"] == "v2v_multi.json"


def test_native_savevideo_output_is_fetched_through_view(inputs, tmp_path, fake_comfy):
    workflows = tmp_path / "native"
    shutil.copytree(SMOKE, workflows)
    graph = json.loads((workflows / "i2v_single.json").read_text())
    output_id = next(k for k, n in graph.items() if "role:output" in n["_meta"]["title"])
    combine = graph.pop(output_id)["inputs"]
    graph["90"] = {"class_type": "CreateVideo", "inputs": {"images": combine["images"], "audio": combine["audio"],
                                                           "fps": 25.0}, "_meta": {"title": "Create video"}}
    graph[output_id] = {"class_type": "SaveVideo", "inputs": {"video": ["90", 0], "filename_prefix": "x",
                                                              "format": "mp4", "codec": "h264"},
                        "_meta": {"title": "role:output"}}
    (workflows / "i2v_single.json").write_text(json.dumps(graph))
    handler_module.reset_worker(replace(handler_module.get_worker().settings, workflow_dir=workflows))
    video = decoded(run(single(inputs)), tmp_path)
    assert (video["width"], video["frames"]) == (128, 25)


def test_volume_delivery_and_cleanup_of_comfyui_and_job_files(inputs, settings, fake_comfy):
    settings.volume_root.mkdir()
    result = run(single(inputs, network_volume=True))
    path = Path(result["video_path"])
    assert path.parent == settings.volume_root and path.suffix == ".mp4" and path.stat().st_size > 0
    assert "video" not in result
    leftovers = [p for p in fake_comfy.root.rglob("*.mp4")]
    assert leftovers == [], "ComfyUI's output files for the job must be removed after delivery"
    assert list(settings.job_root.iterdir()) == []


@pytest.mark.parametrize("job_input,message", [
    ({"image_path": "/runpod-volume/x.png"}, "wav_path: one of wav_path, wav_url or wav_base64 is required"),
    ({"image_base64": "%%%not-base64%%%", "wav_path": "WAV"}, "image_base64: is not valid Base64"),
    ({"input_type": "gif", "image_path": "IMG", "wav_path": "WAV"}, "input_type: 'gif' is not allowed"),
    ({"image_base64": "AUDIO_B64", "wav_path": "WAV"}, "image_base64: the data is not a readable image"),
])
def test_bad_requests_fail_with_the_field_named_and_the_next_job_succeeds(inputs, tmp_path, job_input, message):
    audio_b64 = base64.b64encode((inputs / "voice.wav").read_bytes()).decode()
    replacements = {"WAV": str(inputs / "voice.wav"), "IMG": str(inputs / "face.png"), "AUDIO_B64": audio_b64}
    job_input = {k: replacements.get(v, v) if isinstance(v, str) else v for k, v in job_input.items()}
    result = run(job_input)
    assert list(result) == ["error"] and message in result["error"]
    assert decoded(run(single(inputs)), tmp_path)["frames"] == 25


def test_explicit_value_the_smoke_set_cannot_take_is_refused(inputs):
    assert "has no node that takes steps" in run(single(inputs, steps=8))["error"]


def test_health_probe_reports_readiness_and_runs_nothing(fake_comfy):
    result = run({"test": True, "prompt": "connection test"})
    assert result["ready"] is True and result["comfyui_version"] == "0.3.64"
    assert fake_comfy.prompts == []


def test_validation_error_lists_the_node_errors(inputs, fake_comfy):
    fake_comfy.scenario = "validation_400"
    error = run(single(inputs))["error"]
    assert error.startswith("ComfyUI refused the workflow: Prompt outputs failed validation")
    assert "node " in error


def test_execution_error_names_node_class_and_exception(inputs, fake_comfy):
    fake_comfy.scenario = "execution_error"
    error = run(single(inputs))["error"]
    assert error.startswith("ComfyUI failed at node ") and "(" in error and ":" in error


def test_out_of_memory_says_what_to_change_instead_of_comfyuis_batch_size_tip(inputs, fake_comfy):
    fake_comfy.scenario = "execution_error"
    fake_comfy.error_type = "torch.OutOfMemoryError"
    fake_comfy.error_message = (  # as ComfyUI's execution.py words it
        "Allocation on device 0 would exceed allowed memory. (out of memory)\nCurrently allocated     : 22.10 GiB\n"
        "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might "
        "have accidentally set the batch_size to a large number.")
    error = run(single(inputs, width=1024, height=1024))["error"]
    assert error.startswith("The GPU ran out of memory at node ")
    assert "Allocation on device 0 would exceed allowed memory" in error
    assert "smaller width and height" in error and "batch_size" not in error


def test_a_huge_exception_message_is_quoted_start_and_end_only(inputs, fake_comfy):
    fake_comfy.scenario = "execution_error"
    fake_comfy.error_message = ("shape mismatch: tensor([" + ", ".join(["0.1234"] * 20000)
                                + "]) cannot be broadcast to [1, 16, 21, 60, 104]")
    error = run(single(inputs))["error"]
    assert error.startswith("ComfyUI failed at node ") and "shape mismatch" in error
    assert error.endswith("cannot be broadcast to [1, 16, 21, 60, 104]") and "[...]" in error
    assert len(error) < 600
    fake_comfy.scenario = "success_vhs"
    assert "video" in run(single(inputs)), "the worker keeps serving"


def test_interrupt_from_outside_is_reported(inputs, fake_comfy):
    fake_comfy.scenario = "interrupt_soon"
    assert "ComfyUI interrupted the job at node" in run(single(inputs))["error"]


def test_dropped_websocket_still_completes_from_history(inputs, tmp_path, fake_comfy):
    fake_comfy.scenario = "ws_drop"
    assert decoded(run(single(inputs)), tmp_path)["frames"] == 25


def test_comfyui_dying_mid_job_fails_fast_and_asks_for_a_new_worker(inputs, fake_comfy):
    fake_comfy.scenario = "die"
    started = time.monotonic()
    result = run(single(inputs))
    assert time.monotonic() - started < 15
    assert "is not answering" in result["error"] and result["refresh_worker"] is True


def test_a_hang_past_the_deadline_is_interrupted(inputs, fake_comfy, settings):
    fake_comfy.scenario = "hang"
    handler_module.reset_worker(replace(settings, job_deadline_s=3))
    started = time.monotonic()
    result = run(single(inputs))
    assert time.monotonic() - started < 10
    assert "deadline" in result["error"]
    assert fake_comfy.interrupts, "the prompt must be interrupted in ComfyUI"


def test_cancellation_interrupts_and_dequeues_the_prompt(inputs, fake_comfy):
    fake_comfy.scenario = "hang"

    async def cancel_midway():
        task = asyncio.ensure_future(handler_module.handler({"id": "job-c", "input": single(inputs)}))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if fake_comfy.prompts:
                break
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    prompt_id = fake_comfy.prompts[0]["prompt_id"]
    assert {"prompt_id": prompt_id} in fake_comfy.interrupts
    assert {"delete": [prompt_id]} in fake_comfy.queue_deletes


def test_a_local_test_run_reports_no_failed_progress_posts(fake_comfy, inputs, tmp_path):
    """``python handler.py --test_input`` off RunPod: the job completes and the log shows no
    "Failed to return job results" lines from progress updates that have nowhere to go."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RUNPOD_")}
    env.update(COMFYUI_URL=fake_comfy.url, WORKFLOW_DIR=str(SMOKE), RUN_STARTUP_CHECKS="false",
               ALLOWED_INPUT_ROOTS=str(inputs), JOB_ROOT=str(tmp_path / "jobs"), VOLUME_ROOT=str(tmp_path / "volume"))
    job = {"input": {**single(inputs), "output": "volume"}}
    (tmp_path / "volume").mkdir()

    done = subprocess.run([sys.executable, "handler.py", "--test_input", json.dumps(job)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)

    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "completed successfully" in log, log[-3000:]
    assert "Failed to return job results" not in log, log[-3000:]
    assert list((tmp_path / "volume").rglob("*.mp4")), "the job wrote no video"


@pytest.mark.parametrize("extra, message", [
    ({"output": "volume"}, "output: the network volume was requested, but nothing writable is mounted"),
    ({"network_volume": True}, "network_volume: the network volume was requested, but nothing writable is mounted"),
    ({"output": "s3"},
     "S3 delivery is not configured: set BUCKET_NAME, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY"),
])
def test_a_destination_that_cannot_take_the_video_fails_before_any_generation(fake_comfy, inputs, extra, message):
    result = run(single(inputs, **extra))
    assert message in result["error"]
    assert fake_comfy.prompts == [], "nothing may be generated for a result that cannot be delivered"
