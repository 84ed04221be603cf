"""Text instead of audio, through the handler, the production graphs and the fake ComfyUI, to the MP4.

The fake makes the MP4's soundtrack from the graph's audio inputs as the real nodes would, so the sound
in the delivered video is checked against the speech the real Kokoro-82M made for the job.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import pytest

import handler as handler_module
from infinitetalk_worker.config import REPO_ROOT, Settings
from infinitetalk_worker.constants import FPS
from infinitetalk_worker.rehearsal import best_correlation, decode_mono
from infinitetalk_worker.request import parse_request
from infinitetalk_worker.speech import synthesize
from testsupport.media_factory import make_image, probe

RATE = 16000
WINDOW = RATE // 50


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    make_image(folder / "face.png", (160, 120))
    return folder


@pytest.fixture(autouse=True)
def worker(fake_comfy, kokoro_files, tmp_path: Path, inputs: Path, monkeypatch):
    monkeypatch.setattr("infinitetalk_worker.progress._runpod_sender", lambda job, payload: None)
    model, voices = kokoro_files
    handler_module.reset_worker(Settings(
        comfyui_url=fake_comfy.url, workflow_dir=REPO_ROOT / "workflows", job_root=tmp_path / "jobs",
        volume_root=tmp_path / "volume", allowed_input_roots=[inputs], http_timeout_s=5, ws_idle_timeout_s=1,
        job_deadline_s=120, progress_interval_s=0.0, comfyui_dir=fake_comfy.root,
        kokoro_model_file=model, kokoro_voices_file=voices))
    yield
    handler_module.reset_worker(None)


def run(job_input: dict, tmp_path: Path) -> tuple[dict, Path]:
    result = asyncio.run(handler_module.handler({"id": "job-tts", "input": job_input}))
    assert "error" not in result, result.get("error")
    out = tmp_path / "result.mp4"
    out.write_bytes(base64.b64decode(result["video"], validate=True))
    return result, out


def loud(audio: np.ndarray) -> np.ndarray:
    usable = len(audio) // WINDOW * WINDOW
    return np.sqrt((audio[:usable].reshape(-1, WINDOW) ** 2).mean(axis=1)) > 0.02


def spoken_again(job_input: dict, tmp_path: Path) -> dict[str, np.ndarray]:
    """The job's speech made once more (the job's own files went with its directory): Kokoro on the CPU is
    deterministic, so these are the tracks the graph was given."""
    settings = handler_module.get_worker().settings
    request = parse_request(job_input, settings.max_prompt_chars, settings.max_text_chars)
    folder = tmp_path / "again"
    folder.mkdir()
    speech = synthesize(request, folder, settings)
    return {slot: decode_mono(track.path, RATE) for slot, track in speech.tracks.items()}


def test_a_portrait_and_a_line_of_text_give_a_video_that_speaks_it(inputs, tmp_path, fake_comfy):
    text = "Hello, and welcome to the show. Today we talk about speech."
    job = {"image_path": str(inputs / "face.png"), "text": text, "voice": "jf_alpha", "width": 128, "height": 128}
    result, video = run(job, tmp_path)
    spoken = result["speech"]["speaker_1"]
    assert spoken["voice"] == "jf_alpha" and spoken["source"] == "text"
    assert 1.5 <= len(text.split()) / spoken["duration_s"] <= 4.5
    assert result["timings"]["tts_s"] > 0
    assert result["vocal_separation"] is False, "auto: synthesized speech has no music to separate"
    assert result["frames"] == int(spoken["duration_s"] * FPS)
    facts = probe(video)
    assert facts["frames"] == result["frames"]
    sound, speech = decode_mono(video, RATE), spoken_again(job, tmp_path)["audio_1"]
    assert loud(sound).mean() > 0.3
    assert abs(len(sound) - len(speech)) / RATE < 0.1
    assert best_correlation(sound, speech, RATE // 10) > 0.9


def test_a_dialogue_gives_two_voices_in_the_written_order(inputs, tmp_path, fake_comfy):
    dialogue = "(s1) Did you see the game last night? (s2) I did, what a finish! (s1) Best match this year."
    job = {"image_path": str(inputs / "face.png"), "person_count": "multi", "dialogue": dialogue,
           "voice": "jf_alpha", "voice_2": "jm_kumo", "width": 128, "height": 128}
    result, video = run(job, tmp_path)
    assert result["workflow"] == "i2v_multi.json"
    assert {k: (v["voice"], v["lines"]) for k, v in result["speech"].items()} == {
        "speaker_1": ("jf_alpha", 2), "speaker_2": ("jm_kumo", 1)}
    tracks = spoken_again(job, tmp_path)
    one, two = tracks["audio_1"], tracks["audio_2"]
    loud_one, loud_two = loud(one), loud(two)
    assert not (loud_one & loud_two).any(), "the speakers take turns"
    first, last = np.flatnonzero(loud_two)[[0, -1]]
    assert loud_one[:first].any() and not loud_two[:first].any() and loud_one[last:].any()
    sound = decode_mono(video, RATE)
    assert len(sound) / RATE == pytest.approx(result["speech"]["speaker_1"]["duration_s"], abs=0.1)
    assert best_correlation(sound, one + two, RATE // 10) > 0.9, "the soundtrack is both voices, in turn"


def test_text_errors_reach_the_caller_before_anything_is_fetched(inputs, tmp_path):
    result = asyncio.run(handler_module.handler({"id": "job-bad", "input": {
        "image_url": "https://example.invalid/face.png", "text": "Hi there.", "voice": "af_nobody"}}))
    assert result["error"].startswith("voice: 'af_nobody' is not a voice of this worker; the voices are jf_alpha")


def test_the_readiness_probe_says_whether_the_worker_can_speak():
    result = asyncio.run(handler_module.handler({"id": "probe", "input": {"test": True}}))
    assert result["text_to_speech"] is True
    assert result["text_to_speech_device"] == "cpu"  # onnxruntime here is the CPU build
