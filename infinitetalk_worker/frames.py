"""Frame arithmetic: the number of frames the pinned nodes make from the audio.

The worker reports, caps and trims with one frame count, so it must be the one the nodes produce.
``MultiTalkWav2VecEmbeds`` (WanVideoWrapper 6b286552, ``multitalk/nodes.py``) resamples each voice
to 16 kHz, cuts it to ``num_frames / fps`` seconds and then *truncates*: ``int(seconds * fps)``
of the longest voice (``para``) or of all voices in a row (``add``), and returns
``min(num_frames, that)``. Before it, ``MelBandRoFormerSampler`` resamples to 44.1 kHz with
librosa. Both resamplers round the length up. This module repeats those steps with the same
float operations, so the count agrees with the nodes to the frame, not only to a rounding.
"""

from __future__ import annotations

import math

import numpy as np

from .constants import FPS

EMBED_RATE = 16000  # MultiTalkWav2VecEmbeds' sr
SEPARATION_RATE = 44100  # MelBandRoFormerSampler's sr
MAX_NODE_FRAMES = 10000  # the num_frames widget's max in the node lock


def librosa_length(samples: int, rate: int, target: int) -> int:
    """Length after ``librosa.resample`` (``n_samples = ceil(n * ratio)``, then ``fix_length``)."""
    if rate == target:
        return samples
    return int(math.ceil(samples * (float(target) / rate)))


def torchaudio_length(samples: int, rate: int, target: int) -> int:
    """Length after ``torchaudio.functional.resample``: ``ceil(new * n / orig)`` on the reduced rates,
    taken in float32 (``torch.as_tensor`` of a Python float), which can round a fraction away."""
    if rate == target:
        return samples
    divisor = math.gcd(rate, target)
    orig, new = rate // divisor, target // divisor
    return int(np.ceil(np.float32(new * samples / orig)))


def embedded_samples(samples: int, rate: int, separated: bool) -> int:
    """Samples at 16 kHz that reach the audio embedding, with or without vocal separation first."""
    if separated:
        samples, rate = librosa_length(samples, rate, SEPARATION_RATE), SEPARATION_RATE
    return torchaudio_length(samples, rate, EMBED_RATE)


def node_frames(lengths: list[int], num_frames: int, mode: str, fps: float = float(FPS)) -> int:
    """What ``MultiTalkWav2VecEmbeds.process`` returns as ``num_frames`` for 16 kHz voice lengths."""
    end_sample = int((num_frames / fps) * EMBED_RATE)
    seconds = [min(length, end_sample) / EMBED_RATE for length in lengths]
    total = max(seconds) if mode == "para" else sum(seconds)
    return min(num_frames, int(total * fps))


def frame_count(tracks: list[tuple[int, int]], mode: str, max_frame: int | None, separated: bool) -> int:
    """The frame count to write into the graph: one the node keeps as it is (a fixed point).

    ``tracks`` are (samples, sample rate) as decoded; ``mode`` is ``para`` or ``add`` (one voice:
    either). Writing a count the node then lowers by float rounding would make the worker report
    one frame more than the video has, so the count is lowered until the node returns it unchanged.
    """
    lengths = [embedded_samples(samples, rate, separated) for samples, rate in tracks]
    frames = node_frames(lengths, min(max_frame or MAX_NODE_FRAMES, MAX_NODE_FRAMES), mode)
    while frames > 1 and node_frames(lengths, frames, mode) < frames:
        frames = node_frames(lengths, frames, mode)
    return max(1, frames)
