"""Frame arithmetic: the count the worker writes, reports and trims with is the one the nodes make.

Reference values come from the pinned nodes: MultiTalkWav2VecEmbeds truncates (``int(seconds * fps)``
over the 16 kHz voices cut to ``num_frames / fps``); the resamplers round lengths up (librosa in
float64, torchaudio in float32). The rehearsal trial saw 37 frames for 1.5 s where a ceiling gave 38.
"""

from __future__ import annotations

import random

import pytest

from infinitetalk_worker.frames import (
    MAX_NODE_FRAMES,
    embedded_samples,
    frame_count,
    generated_frames,
    held_frame_bytes,
    librosa_length,
    node_frames,
    torchaudio_length,
    window_count,
    window_size,
)


@pytest.mark.parametrize("rate", [16000, 22050, 24000, 44100, 48000])
def test_one_and_a_half_seconds_make_37_frames_not_38(rate):
    samples = int(1.5 * rate)
    assert frame_count([(samples, rate)], "para", None, separated=True) == 37
    assert frame_count([(samples, rate)], "para", None, separated=False) == 37


@pytest.mark.parametrize("tracks,mode,cap,expected", [
    ([(32000, 16000)], "para", None, 50),
    ([(16000, 16000), (48000, 16000)], "para", None, 75),  # the longer voice
    ([(16000, 16000), (48000, 16000)], "add", None, 100),  # both voices in a row
    ([(160000, 16000)], "para", 81, 81),  # max_frame caps
    ([(441000, 44100)], "para", 30, 30),
])
def test_frames_follow_the_audio_and_the_cap(tracks, mode, cap, expected):
    assert frame_count(tracks, mode, cap, separated=True) == expected


def test_audio_longer_than_the_node_allows_stops_at_its_maximum():
    ten_minutes = (600 * 16000, 16000)
    assert frame_count([ten_minutes], "para", None, separated=True) == MAX_NODE_FRAMES


def test_resampled_lengths_round_up():
    assert librosa_length(24000, 16000, 44100) == 66150
    assert librosa_length(1, 16000, 44100) == 3  # 2.75625 samples -> 3
    assert torchaudio_length(66150, 44100, 16000) == 24000
    assert torchaudio_length(1000, 48000, 16000) == 334  # 333.33 -> 334


def test_torchaudio_rounds_in_float32():
    # 160 * 268015 / 441 = 97239.0023 in float64, but 97239.0 in float32: torchaudio gives 97239.
    assert torchaudio_length(268015, 44100, 16000) == 97239
    assert embedded_samples(97239, 16000, separated=True) == 97239


@pytest.mark.parametrize("mode", ["para", "add"])
def test_the_count_written_is_kept_by_the_node(mode):
    """Writing N must give N back: otherwise the worker reports a frame the video lacks."""
    rng = random.Random(7)
    for _ in range(2000):
        tracks = [(rng.randint(8000, 800000), rng.choice([16000, 22050, 44100, 48000])) for _ in range(2)]
        frames = frame_count(tracks, mode, rng.choice([None, rng.randint(1, 400)]), separated=True)
        lengths = [embedded_samples(n, r, True) for n, r in tracks]
        assert node_frames(lengths, frames, mode) == frames


# -- the InfiniteTalk window loop: 81-frame windows, each after the first adding 81 - 9 = 72 frames --------


@pytest.mark.parametrize("frames, windows, generated", [
    (1, 1, 81), (81, 1, 81),  # one window, even for a single frame: the sampler always makes a whole one
    (82, 2, 153), (154, 3, 225), (225, 3, 225),  # three windows: 81 + 72 + 72
    (14337, 199, 14337), (14338, 200, 14409), (14409, 200, 14409),  # 200 windows
])
def test_windows_and_generated_frames(frames, windows, generated):
    assert window_count(frames) == windows
    assert generated_frames(frames) == generated


def test_ten_minutes_of_audio_stop_at_the_nodes_10000_frames_in_139_windows():
    frames = frame_count([(600 * 16000, 16000)], "para", None, separated=False)
    assert frames == MAX_NODE_FRAMES
    assert window_count(frames) == 139 and generated_frames(frames) == 10017


def test_decoded_frames_held_at_once_grow_with_the_windows():
    """bf16 sampler output + float32 copy = 6 bytes per RGB value of every generated frame."""
    assert held_frame_bytes(1, 512, 512) == 81 * 512 * 512 * 3 * 6  # 0.38 GB
    assert held_frame_bytes(225, 512, 512) == 225 * 512 * 512 * 3 * 6  # 1.06 GB
    assert held_frame_bytes(14409, 512, 512) == 14409 * 512 * 512 * 3 * 6  # 68.0 GB


def test_a_different_window_and_overlap_follow_the_nodes_rounding():
    assert window_size(83) == 81 and window_size(81) == 81
    assert window_count(300, window=81, motion=25) == 1 + -(-(300 - 81) // 56)


def test_a_source_video_adds_its_float32_frames():
    assert held_frame_bytes(225, 512, 512, source_frames=225) == 225 * 512 * 512 * 3 * (6 + 4)
