"""The handler end to end against a REAL ComfyUI running the CPU smoke workflow set.

Skipped unless a ComfyUI answers ``GET /system_stats`` at ``COMFYUI_URL`` (default
http://127.0.0.1:8188) within 2 s. That ComfyUI must run on this machine (the worker hands it
absolute file paths) with ComfyUI-VideoHelperSuite and a working ffmpeg; no model files are needed.
The worker is configured the way a deployment would be, through the environment: WORKFLOW_DIR
points at ``workflows/smoke``, ALLOWED_INPUT_ROOTS at this test's files, and ALLOW_PRIVATE_URLS lets
it fetch ``*_url`` inputs from a loopback HTTP server the test starts.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from live_comfyui import COMFYUI_URL, comfyui_answers  # noqa: E402

from testsupport.media_factory import make_image, make_video, make_wav  # noqa: E402

FPS = 25
# Output keys Engui Studio would take for the result before `video` (design §3).
FORBIDDEN_KEYS = {"s3_path", "output_path", "image_path", "image", "image_url"}
AUDIO_1_S, AUDIO_2_S = 1.2, 2.0
MIME = {".png": "image/png", ".mp4": "video/mp4", ".wav": "audio/wav"}


pytestmark = pytest.mark.skipif(
    not comfyui_answers(COMFYUI_URL), reason=f"no ComfyUI answers at {COMFYUI_URL} (set COMFYUI_URL to run)"
)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A portrait, two speech-like tracks of different length, and a 30 fps clip of another size."""
    folder = tmp_path_factory.mktemp("real-comfyui-inputs")
    make_image(folder / "portrait.png", (320, 240))
    make_wav(folder / "voice_1.wav", AUDIO_1_S, rate=22050)
    make_wav(folder / "voice_2.wav", AUDIO_2_S, rate=16000, frequency=330)
    make_video(folder / "clip.mp4", 3.0, (160, 120), fps=30)
    return folder


@pytest.fixture(scope="module")
def served(media: Path) -> Iterator[str]:
    """The media folder over HTTP on a free loopback port, for the *_url inputs."""
    handler_class = functools.partial(_QuietHandler, directory=str(media))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # keep the test output readable
        pass


@pytest.fixture
def handler_module(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The real handler, configured from the environment as in a deployment."""
    monkeypatch.setenv("COMFYUI_URL", COMFYUI_URL)
    monkeypatch.setenv("WORKFLOW_DIR", str(REPO_ROOT / "workflows" / "smoke"))
    monkeypatch.setenv("ALLOWED_INPUT_ROOTS", str(media))
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "true")
    monkeypatch.setenv("JOB_ROOT", str(tmp_path / "jobs"))
    monkeypatch.setenv("VOLUME_ROOT", str(tmp_path / "no-volume"))
    monkeypatch.setenv("JOB_DEADLINE_S", "300")
    import handler

    # RunPod's progress endpoint does not exist here; the reports themselves are not under test.
    monkeypatch.setattr("infinitetalk_worker.progress._runpod_sender", lambda job, payload: None)
    handler.reset_worker(None)  # the next job builds the worker from the environment above
    yield handler
    handler.reset_worker(None)


def run_job(handler_module, job_input: dict[str, Any]) -> dict[str, Any]:
    job = {"id": f"real-{uuid.uuid4().hex[:8]}", "input": job_input}
    return asyncio.run(handler_module.handler(job))


def encoded(path: Path, data_uri: bool = False) -> str:
    text = base64.b64encode(path.read_bytes()).decode()
    return f"data:{MIME[path.suffix]};base64,{text}" if data_uri else text


def source(slot: str, form: str, path: Path, served_url: str, suffix: str = "") -> dict[str, str]:
    """One request key for a media slot in the given form: path, url, base64 or data-URI base64."""
    if form == "path":
        return {f"{slot}_path{suffix}": str(path)}
    if form == "url":
        return {f"{slot}_url{suffix}": f"{served_url}/{path.name}"}
    return {f"{slot}_base64{suffix}": encoded(path, data_uri=form == "data_uri")}


def delivered_video(result: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Decode the returned Base64 MP4 and probe it for real; check the response shape on the way."""
    assert "error" not in result, result["error"]
    assert not FORBIDDEN_KEYS & result.keys()
    assert isinstance(result["video"], str) and not result["video"].startswith("data:")
    video_file = tmp_path / f"result-{uuid.uuid4().hex[:8]}.mp4"
    video_file.write_bytes(base64.b64decode(result["video"], validate=True))
    info = probe(video_file)
    info["path"] = video_file
    return info


def probe(path: Path) -> dict[str, Any]:
    """Size, rate and decoded frame count of the video, and decoded length of the audio track.

    Every stream attribute is read while its container is open: PyAV's stream objects must not
    outlive their container.
    """
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        info: dict[str, Any] = {"width": video.codec_context.width, "height": video.codec_context.height,
                                "fps": float(video.average_rate or 0), "audio_seconds": None}
        info["frames"] = sum(1 for _ in container.decode(video))
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            info["audio_seconds"] = sum(frame.samples for frame in container.decode(audio)) / audio.rate
    return info


def assert_matches(info: dict[str, Any], size: tuple[int, int], audio_seconds: float) -> None:
    """Requested size on the 16-pixel grid, 25 fps, and audio (and picture) as long as the speech."""
    for got, asked in zip((info["width"], info["height"]), size):
        assert got % 16 == 0 and abs(got - asked) <= 8, (got, asked)
    assert info["fps"] == FPS
    assert info["audio_seconds"] is not None, "the MP4 has no audio track"
    assert info["audio_seconds"] == pytest.approx(audio_seconds, abs=0.2)
    assert info["frames"] / FPS == pytest.approx(audio_seconds, abs=0.2)


@pytest.mark.parametrize("form", ["path", "url", "base64", "data_uri"])
def test_image_single_speaker_runs_for_every_form_of_image_input(handler_module, media, served, tmp_path, form):
    job = {"input_type": "image", "person_count": "single", "width": 256, "height": 192,
           **source("image", form, media / "portrait.png", served), "wav_path": str(media / "voice_1.wav")}
    result = run_job(handler_module, job)
    info = delivered_video(result, tmp_path)
    assert_matches(info, (256, 192), AUDIO_1_S)
    assert (result["width"], result["height"], result["workflow"]) == (256, 192, "i2v_single.json")
    assert isinstance(result["seed"], int)


@pytest.mark.parametrize("form", ["path", "url", "base64", "data_uri"])
def test_video_single_speaker_runs_for_every_form_of_video_input(handler_module, media, served, tmp_path, form):
    job = {"input_type": "video", "width": 250, "height": 200, "seed": 11,
           **source("video", form, media / "clip.mp4", served), **source("wav", "url", media / "voice_1.wav", served)}
    result = run_job(handler_module, job)
    info = delivered_video(result, tmp_path)
    assert_matches(info, (250, 200), AUDIO_1_S)
    assert (result["seed"], result["workflow"]) == (11, "v2v_single.json")


def test_image_multi_speaker_plays_both_voices_on_one_timeline(handler_module, media, served, tmp_path):
    job = {"input_type": "image", "person_count": "multi", "width": 256, "height": 256,
           **source("image", "base64", media / "portrait.png", served),
           **source("wav", "data_uri", media / "voice_1.wav", served),
           **source("wav", "path", media / "voice_2.wav", served, suffix="_2")}
    result = run_job(handler_module, job)
    info = delivered_video(result, tmp_path)
    assert_matches(info, (256, 256), max(AUDIO_1_S, AUDIO_2_S))  # "para": the longer track
    assert result["workflow"] == "i2v_multi.json"


def test_video_multi_speaker_plays_both_voices_on_one_timeline(handler_module, media, served, tmp_path):
    job = {"input_type": "video", "person_count": "multi", "width": 192, "height": 160,
           **source("video", "data_uri", media / "clip.mp4", served),
           **source("wav", "path", media / "voice_1.wav", served),
           **source("wav", "url", media / "voice_2.wav", served, suffix="_2")}
    result = run_job(handler_module, job)
    info = delivered_video(result, tmp_path)
    assert_matches(info, (192, 160), max(AUDIO_1_S, AUDIO_2_S))
    assert result["workflow"] == "v2v_multi.json"


def test_speaker_boxes_tint_each_voices_region_in_the_smoke_video(handler_module, media, tmp_path):
    """The smoke multi graphs tint speaker 1's region red and speaker 2's blue, from the request's boxes."""
    grey = media / "grey.png"
    Image.new("RGB", (320, 240), (128, 128, 128)).save(grey)
    job = {"person_count": "multi", "image_path": str(grey), "wav_path": str(media / "voice_1.wav"),
           "wav_path_2": str(media / "voice_2.wav"), "width": 320, "height": 240,
           "speaker_boxes": [[0.05, 0.1, 0.45, 0.9], [0.6, 0.2, 0.95, 0.8]]}
    info = delivered_video(run_job(handler_module, job), tmp_path)
    pixels = first_frame_array(info["path"]).astype(int)

    def red_minus_blue(x: float, y: float) -> int:
        red, _, blue = pixels[int(y * 240), int(x * 320)]
        return red - blue

    assert red_minus_blue(0.25, 0.5) > 30  # inside box 1
    assert red_minus_blue(0.78, 0.5) < -30  # inside box 2
    assert abs(red_minus_blue(0.52, 0.05)) < 15  # in neither box


def test_seed_and_prompt_reach_the_graph(handler_module, media, tmp_path):
    """The smoke graph adds seeded noise and records the prompt in the MP4 metadata."""
    prompt = f"smoke prompt {uuid.uuid4().hex}"
    base = {"image_path": str(media / "portrait.png"), "wav_path": str(media / "voice_1.wav"),
            "width": 128, "height": 128, "prompt": prompt}
    first = delivered_video(run_job(handler_module, {**base, "seed": 1}), tmp_path)
    second = delivered_video(run_job(handler_module, {**base, "seed": 2}), tmp_path)
    assert first_frame(first["path"]) != first_frame(second["path"])
    with av.open(str(first["path"])) as container:
        assert prompt in container.metadata.get("comment", "")


def first_frame_array(path: Path):
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def first_frame(path: Path) -> bytes:
    return first_frame_array(path).tobytes()


@pytest.mark.parametrize(
    ("job_input", "field"),
    [
        ({"image_path": "{media}/portrait.png"}, "wav_path"),
        ({"image_base64": "this is not base64!!", "wav_path": "{media}/voice_1.wav"}, "image_base64"),
        ({"input_type": "audio", "image_path": "{media}/portrait.png", "wav_path": "{media}/voice_1.wav"},
         "input_type"),
        ({"image_base64": "<voice_1.wav as base64>", "wav_path": "{media}/voice_1.wav"}, "image_base64"),
    ],
    ids=["no-audio", "bad-base64", "unknown-input-type", "audio-as-image"],
)
def test_bad_requests_fail_with_an_error_naming_the_field(handler_module, media, job_input, field):
    filled = {}
    for key, value in job_input.items():
        if value == "<voice_1.wav as base64>":
            value = encoded(media / "voice_1.wav")
        filled[key] = value.replace("{media}", str(media))
    result = run_job(handler_module, filled)
    assert set(result) <= {"error", "refresh_worker"} and "video" not in result
    assert field in result["error"], result["error"]


# ---------------------------------------------------------------- text to speech (issue 13)


@pytest.fixture
def speaking_handler(handler_module, kokoro_files, monkeypatch: pytest.MonkeyPatch):
    """The handler with the real Kokoro-82M of the test packages as its text-to-speech engine."""
    model, voices = kokoro_files
    monkeypatch.setenv("KOKORO_MODEL", str(model))
    monkeypatch.setenv("KOKORO_VOICES", str(voices))
    handler_module.reset_worker(None)
    return handler_module


def test_real_comfyui_speaks_a_line_of_text(speaking_handler, media: Path, tmp_path: Path):
    result = run_job(speaking_handler, {"image_path": str(media / "portrait.png"), "width": 256, "height": 192,
                                        "text": "Hello from the smoke test.", "voice": "jf_alpha"})
    info = delivered_video(result, tmp_path)
    spoken = result["speech"]["speaker_1"]["duration_s"]
    assert 5 / 4.5 <= spoken <= 5 / 1.5, "five words at a human pace"
    assert info["audio_seconds"] == pytest.approx(spoken, abs=0.1)
    assert info["frames"] == result["frames"]


def test_real_comfyui_speaks_a_two_voice_dialogue(speaking_handler, media: Path, tmp_path: Path):
    result = run_job(speaking_handler, {
        "image_path": str(media / "portrait.png"), "person_count": "multi", "width": 256, "height": 192,
        "dialogue": "(s1) Are you ready? (s2) Yes, let us begin.", "voice": "jf_alpha", "voice_2": "jm_kumo"})
    info = delivered_video(result, tmp_path)
    speech = result["speech"]
    assert (speech["speaker_1"]["voice"], speech["speaker_2"]["voice"]) == ("jf_alpha", "jm_kumo")
    assert info["audio_seconds"] == pytest.approx(speech["speaker_1"]["duration_s"], abs=0.1)
