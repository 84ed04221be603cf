"""The rehearsal's checks: a video that is what the request asked for passes, each kind of wrong one fails.

The MP4s are encoded for real (H.264 + AAC with PyAV), so the checks are tested on what VHS_VideoCombine
hands back, not on numbers. The rehearsal itself against a real ComfyUI is in test_rehearsal_live.py.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from infinitetalk_worker.rehearsal import CASES, Case, case_input, check_result, decode_mono, write_wav

RATE = 16000
#: the size a result reports for the 128x128 videos of these tests
REPORTED_128 = {"width": 128, "height": 128}


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Noise bursts with pauses: correlates with itself only, like speech and unlike a pure tone."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 0.2, int(seconds * RATE)).astype(np.float32)
    envelope = (np.sin(np.arange(len(signal)) / RATE * 2 * np.pi * 3) > -0.3).astype(np.float32)
    return signal * envelope


def encode_mp4(path: Path, frames: int, size: tuple[int, int], sound: np.ndarray | None, fps: int = 25) -> Path:
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = out.add_stream("aac", rate=RATE, layout="mono") if sound is not None else None
        for index in range(frames):
            picture = np.full((size[1], size[0], 3), index % 255, dtype=np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(video.encode(None))
        if audio is not None:
            for start in range(0, len(sound), 1024):
                chunk = sound[start:start + 1024].reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
    return path


@pytest.fixture
def single(tmp_path):
    voice = speech_like(1.5, 1)
    write_wav(tmp_path / "voice.wav", voice, RATE)
    raw = {"input_type": "image", "person_count": "single", "width": 128, "height": 128,
           "wav_path": str(tmp_path / "voice.wav")}
    return Case("t", "image", "single", (1.5,), {}), raw, decode_mono(tmp_path / "voice.wav", RATE)


def test_a_video_as_asked_passes(tmp_path, single):
    case, raw, voice = single
    video = encode_mp4(tmp_path / "ok.mp4", 37, (128, 128), voice)
    assert check_result(case, raw, {"frames": 37, **REPORTED_128}, video) == []


@pytest.mark.parametrize("frames,size,reported,expected_words", [
    (30, (128, 128), 30, "frames for 37"),
    (37, (128, 128), 38, "the result says 38"),
    (37, (160, 128), 37, "160x128 instead of the requested 128x128"),
])
def test_wrong_length_report_or_size_fails(tmp_path, single, frames, size, reported, expected_words):
    case, raw, voice = single
    video = encode_mp4(tmp_path / "bad.mp4", frames, size, voice)
    problems = check_result(case, raw, {"frames": reported, "width": size[0], "height": size[1]}, video)
    assert any(expected_words in p for p in problems), problems


def test_a_bucket_case_expects_its_size_and_the_reported_size(tmp_path, single):
    _, raw, voice = single
    raw = {key: value for key, value in raw.items() if key not in ("width", "height")} | {"resolution": "480p"}
    case = Case("t", "image", "single", (1.5,), {"resolution": "480p"}, size=(160, 128))
    video = encode_mp4(tmp_path / "bucket.mp4", 37, (160, 128), voice)
    assert check_result(case, raw, {"frames": 37, "width": 160, "height": 128}, video) == []
    problems = check_result(case, raw, {"frames": 37, **REPORTED_128}, video)
    assert problems == ["the result says 128x128, the MP4 is 160x128"]
    square = encode_mp4(tmp_path / "square.mp4", 37, (128, 128), voice)
    assert "128x128 instead of the requested 160x128" in check_result(case, raw, {"frames": 37, **REPORTED_128}, square)


def test_another_soundtrack_or_none_fails(tmp_path, single):
    case, raw, _ = single
    other = encode_mp4(tmp_path / "other.mp4", 37, (128, 128), speech_like(1.5, 2))
    assert any("does not match" in p for p in check_result(case, raw, {"frames": 37, **REPORTED_128}, other))
    silent = encode_mp4(tmp_path / "silent.mp4", 37, (128, 128), None)
    assert check_result(case, raw, {"frames": 37, **REPORTED_128}, silent) == ["the MP4 has no soundtrack"]


def test_a_truncated_soundtrack_fails(tmp_path, single):
    case, raw, voice = single
    video = encode_mp4(tmp_path / "short.mp4", 37, (128, 128), voice[: int(1.2 * RATE)])
    assert any("soundtrack is 1.2" in p for p in check_result(case, raw, {"frames": 37, **REPORTED_128}, video))


def test_with_max_frame_the_soundtrack_ends_with_the_picture(tmp_path, single):
    case, raw, voice = single
    raw = {**raw, "max_frame": 25}
    cut = encode_mp4(tmp_path / "cut.mp4", 25, (128, 128), voice[: RATE])
    assert check_result(case, raw, {"frames": 25, **REPORTED_128}, cut) == []
    whole = encode_mp4(tmp_path / "whole.mp4", 25, (128, 128), voice)  # sound running on after the picture
    assert any("soundtrack is 1.5" in p for p in check_result(case, raw, {"frames": 25, **REPORTED_128}, whole))


def test_two_voices_in_a_row_are_checked_against_both(tmp_path):
    first, second = speech_like(0.8, 3), speech_like(0.8, 4)
    write_wav(tmp_path / "a.wav", first, RATE)
    write_wav(tmp_path / "b.wav", second, RATE)
    raw = {"width": 128, "height": 128, "wav_path": str(tmp_path / "a.wav"), "wav_path_2": str(tmp_path / "b.wav")}
    case = Case("t", "image", "multi", (0.8, 0.8), {"multi_audio_type": "add"})
    both = np.concatenate([decode_mono(tmp_path / "a.wav", RATE), decode_mono(tmp_path / "b.wav", RATE)])
    in_a_row = encode_mp4(tmp_path / "add.mp4", 40, (128, 128), both)
    assert check_result(case, raw, {"frames": 40, **REPORTED_128}, in_a_row) == []
    # the same two voices on one timeline is not what "add" asked for
    mixed = first + second
    together = encode_mp4(tmp_path / "para.mp4", 40, (128, 128), mixed)
    problems = check_result(case, raw, {"frames": 40, **REPORTED_128}, together)
    assert problems


def test_the_cases_cover_what_the_issue_asks_for():
    extras = [c.extra for c in CASES]
    assert {c.name.split("_")[0] + "_" + c.person_count for c in CASES if c.quick} == {
        "i2v_single", "i2v_multi", "v2v_single", "v2v_multi"}
    assert any(1 + -(-(int(c.voices[0] * 25) - 81) // 72) >= 3 for c in CASES)  # >= 3 windows
    assert any("max_frame" in e for e in extras) and any(e.get("cfg", 1) > 1 for e in extras)
    assert any(e.get("width") != e.get("height") for e in extras)
    assert {e.get("multi_audio_type") for e in extras} >= {"para", "add"}
    assert any("speaker_boxes" in e for e in extras) and any(e.get("force_offload") is False for e in extras)
    assert {e.get("steps") for c, e in zip(CASES, extras) if c.input_type == "video"} >= {4, 8}
    assert {"resolution", "colormatch", "acceleration"} <= {key for e in extras for key in e}
    assert any(e.get("quality") == "reference" for e in extras)


def test_case_media_have_the_asked_lengths(tmp_path):
    case = next(c for c in CASES if c.name == "v2v_multi_add")
    raw = case_input(case, tmp_path)
    assert len(decode_mono(Path(raw["wav_path"]), RATE)) == int(0.8 * RATE)
    with av.open(raw["video_path"]) as clip:
        assert sum(1 for _ in clip.decode(video=0)) == round(case.video_seconds * 25)


def test_right_left_expects_speaker_2_first(tmp_path):
    first, second = speech_like(0.8, 5), speech_like(0.8, 6)
    write_wav(tmp_path / "a.wav", first, RATE)
    write_wav(tmp_path / "b.wav", second, RATE)
    raw = {"width": 128, "height": 128, "wav_path": str(tmp_path / "a.wav"), "wav_path_2": str(tmp_path / "b.wav")}
    case = next(c for c in CASES if c.extra.get("order") == "right_left")
    case = Case("t", "image", "multi", (0.8, 0.8), case.extra)
    a, b = decode_mono(tmp_path / "a.wav", RATE), decode_mono(tmp_path / "b.wav", RATE)
    swapped = encode_mp4(tmp_path / "ba.mp4", 40, (128, 128), np.concatenate([b, a]))
    assert check_result(case, raw, {"frames": 40, **REPORTED_128}, swapped) == []
    in_request_order = encode_mp4(tmp_path / "ab.mp4", 40, (128, 128), np.concatenate([a, b]))
    assert any("does not match" in p for p in check_result(case, raw, {"frames": 40, **REPORTED_128}, in_request_order))


def test_the_rehearsal_gives_its_slow_cpu_cases_more_than_the_default_one_hour_deadline(tmp_path):
    from infinitetalk_worker.config import Settings
    from infinitetalk_worker.rehearsal import rehearsal_settings

    assert Settings().job_deadline_s == 3600  # the 480p case took longer than this on the build machine
    assert rehearsal_settings(Settings(), None, tmp_path).job_deadline_s == 6 * 3600
    assert rehearsal_settings(Settings(job_deadline_s=9 * 3600), None, tmp_path).job_deadline_s == 9 * 3600
