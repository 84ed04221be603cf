"""The production workflows (workflows/*.json) through the worker's job path against the fake ComfyUI.

The fake computes each node's output the way the real node does (testsupport/fake_comfyui.py,
NODE_CLASSES), without the worker's role table: so the frames, size and soundtrack the worker reports
are checked against what the pinned nodes would make of the graph the worker wrote.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest

import handler as handler_module
from infinitetalk_worker.config import REPO_ROOT, Settings
from testsupport.media_factory import make_image, make_video, make_wav, probe


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    make_image(folder / "face.png", (160, 120))
    make_wav(folder / "voice.wav", 1.5)
    make_wav(folder / "voice2.wav", 1.0, frequency=330)
    make_video(folder / "clip.mp4", 2.0, (96, 64))
    return folder


@pytest.fixture(autouse=True)
def worker(fake_comfy, tmp_path: Path, inputs: Path, monkeypatch):
    monkeypatch.setattr("infinitetalk_worker.progress._runpod_sender", lambda job, payload: None)
    handler_module.reset_worker(Settings(
        comfyui_url=fake_comfy.url, workflow_dir=REPO_ROOT / "workflows", job_root=tmp_path / "jobs",
        volume_root=tmp_path / "volume", allowed_input_roots=[inputs], http_timeout_s=5, ws_idle_timeout_s=1,
        job_deadline_s=60, progress_interval_s=0.0, comfyui_dir=fake_comfy.root))
    yield
    handler_module.reset_worker(None)


def run(job_input: dict, tmp_path: Path) -> tuple[dict, dict]:
    result = asyncio.run(handler_module.handler({"id": "job-prod", "input": job_input}))
    assert "error" not in result, result.get("error")
    out = tmp_path / f"result-{time.monotonic_ns()}.mp4"
    out.write_bytes(base64.b64decode(result["video"], validate=True))
    return result, probe(out)


JOBS = {
    "i2v_single": {"image_path": "face.png", "wav_path": "voice.wav"},
    "i2v_multi": {"person_count": "multi", "image_path": "face.png", "wav_path": "voice.wav",
                  "wav_path_2": "voice2.wav"},
    "v2v_single": {"input_type": "video", "video_path": "clip.mp4", "wav_path": "voice.wav"},
    "v2v_multi": {"input_type": "video", "person_count": "multi", "video_path": "clip.mp4", "wav_path": "voice.wav",
                  "wav_path_2": "voice2.wav"},
}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_the_reported_frames_are_the_frames_of_the_video(inputs, tmp_path, name):
    job = {key: str(inputs / value) if key.endswith("_path") or key.endswith("_2") else value
           for key, value in JOBS[name].items()}
    result, video = run({**job, "width": 192, "height": 128}, tmp_path)
    assert result["workflow"] == f"{name}.json"
    assert (video["width"], video["height"], video["fps"]) == (192, 128, 25.0)
    assert video["frames"] == result["frames"] == 37  # int(1.5 s * 25), as MultiTalkWav2VecEmbeds cuts it, not 38
    assert video["audio_seconds"] == pytest.approx(37 / 25, abs=0.07)  # to the AAC frame (1,024 samples)


@pytest.mark.parametrize("separate, frames", [("auto", 17), (False, 16)])
def test_the_frames_follow_whether_the_voice_was_separated(inputs, tmp_path, fake_comfy, separate, frames):
    # 10,879 samples at 16 kHz: MelBandRoFormer's 44.1 kHz detour gives the embedding one frame more than
    # the voice fed straight to it, so the worker must know which path the graph takes.
    make_wav(inputs / "odd.wav", 10879 / 16000)
    result, video = run({"image_path": str(inputs / "face.png"), "wav_path": str(inputs / "odd.wav"),
                         "separate_vocals": separate, "width": 128, "height": 128}, tmp_path)
    classes = {node["class_type"] for node in fake_comfy.prompts[-1]["prompt"].values()}
    assert ("MelBandRoFormerSampler" in classes) is (separate == "auto")
    assert result["vocal_separation"] is (separate == "auto")
    assert video["frames"] == result["frames"] == frames


def test_resolution_and_quality_shape_the_video_and_the_result_says_what_was_made(inputs, tmp_path, fake_comfy):
    result, video = run({"image_path": str(inputs / "face.png"), "wav_path": str(inputs / "voice.wav"),
                         "resolution": "480p", "quality": "reference", "acceleration": "teacache"}, tmp_path)
    assert (video["width"], video["height"]) == (result["width"], result["height"]) == (752, 544)  # 160x120: 4:3
    assert result["quality"] == "reference"
    assert result["sampling"] == {"steps": 40, "cfg": 5.0, "shift": 7.0, "audio_cfg_scale": 4.0, "audio_scale": 1.0,
                                  "motion_frame": 9, "colormatch": "disabled", "distill_lora": False,
                                  "acceleration": "teacache"}
    submitted = fake_comfy.prompts[-1]["prompt"]
    assert not any(node["class_type"] == "WanVideoLoraSelect" for node in submitted.values())


# ---------------------------------------------------------------- speakers


FACES = REPO_ROOT / "tests" / "data" / "faces"


def test_a_two_speaker_job_reports_the_regions_it_found_on_the_faces(inputs, tmp_path, fake_comfy):
    photo = inputs / "two_off_centre.jpg"
    photo.write_bytes((FACES / photo.name).read_bytes())
    result, video = run({"person_count": "multi", "image_path": str(photo), "wav_path": str(inputs / "voice.wav"),
                         "wav_path_2": str(inputs / "voice2.wav"), "width": 960, "height": 288,
                         "order": "right_left"}, tmp_path)
    assert result["speaker_boxes_source"] == "auto"
    first, second = result["speaker_boxes"]
    assert first[0] <= 0.11 and first[2] >= 0.20 and first[2] <= second[0] and second[2] >= 0.46 > second[0]
    assert not any("speaker_boxes" in warning for warning in result.get("warnings", []))
    assert video["frames"] == result["frames"] == 62  # right_left: one voice after the other, 1.0 s + 1.5 s
    submitted = fake_comfy.prompts[-1]["prompt"]
    first_voice = next(n for n in submitted.values() if "role:audio_1" in n.get("_meta", {}).get("title", ""))
    assert first_voice["inputs"]["audio"] == str(inputs / "voice2.wav")


def test_a_picture_without_two_faces_gets_the_halves_and_the_result_says_so(inputs, tmp_path):
    result, _ = run({"person_count": "multi", "image_path": str(inputs / "face.png"),
                     "wav_path": str(inputs / "voice.wav"), "wav_path_2": str(inputs / "voice2.wav"),
                     "width": 192, "height": 128}, tmp_path)
    assert result["speaker_boxes_source"] == "default"
    assert result["speaker_boxes"] == [[0.05, 0.1, 0.45, 0.9], [0.55, 0.1, 0.95, 0.9]]
    assert any(w.startswith("speaker_boxes auto: found no face in the picture") for w in result["warnings"])


def test_boxes_from_the_request_are_reported_as_the_requests(inputs, tmp_path):
    boxes = [[0.0, 0.0, 0.4, 0.8], [0.6, 0.2, 1.0, 1.0]]
    result, _ = run({"input_type": "video", "person_count": "multi", "video_path": str(inputs / "clip.mp4"),
                     "wav_path": str(inputs / "voice.wav"), "wav_path_2": str(inputs / "voice2.wav"),
                     "speaker_boxes": boxes, "width": 192, "height": 128}, tmp_path)
    assert (result["speaker_boxes"], result["speaker_boxes_source"]) == (boxes, "request")


def test_one_speaker_jobs_report_no_regions(inputs, tmp_path):
    result, _ = run({"image_path": str(inputs / "face.png"), "wav_path": str(inputs / "voice.wav"),
                     "width": 128, "height": 128}, tmp_path)
    assert "speaker_boxes" not in result and "speaker_boxes_source" not in result
