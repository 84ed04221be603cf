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


# -- the InfiniteTalk window loop (WanVideoSampler, nodes_sampler.py:2046-2478 at 6b286552) ----------------
#
# The first window makes ``window`` frames; each later one starts ``window - motion`` frames further on and
# adds that many, until a window reaches the end of the audio embedding. Every decoded window is kept
# (``gen_video_list``) in the VAE's precision (bf16 in the shipped workflows) and joined with ``torch.cat``
# at the end; ``WanVideoDecode`` then hands on a float32 copy while ComfyUI still holds the bf16 original
# as the sampler's output, and ``GetImageRangeFromBatch`` trims it with a view (KJNodes aa89c147).
# ``VHS_VideoCombine`` converts frame by frame. So the host holds 2 + 4 bytes per channel value of every
# generated frame at once, whatever the GPU.
#
# Video input adds the source: ``VHS_LoadVideo`` keeps its frames (float32, at the output size) for the
# whole prompt, and ``WanVideoEncode`` (nodes.py:2136-2168) clones them and moves the whole clip to the
# GPU in bf16, twice (``image * 2.0 - 1.0``), before the sampler starts: 4 bytes per value on the GPU.

WINDOW_FRAMES = 81  # the shipped workflows' frame_window_size
MOTION_FRAMES = 9  # the shipped workflows' motion_frame: frames each window carries over from the last
HELD_BYTES_PER_VALUE = 2 + 4  # bf16 sampler output + WanVideoDecode's float32 copy, both alive until the end
SOURCE_BYTES_PER_VALUE = 4  # VHS_LoadVideo's float32 frames, alive until the end (video input)
ENCODE_GPU_BYTES_PER_VALUE = 2 + 2  # WanVideoEncode: the clip in bf16 on the GPU, and ``image * 2 - 1`` of it


def window_size(frame_window_size: int) -> int:
    """``WanVideoImageToVideoMultiTalk`` rounds the window down to 4n + 1 frames."""
    return ((frame_window_size - 1) // 4) * 4 + 1


def window_count(frames: int, window: int = WINDOW_FRAMES, motion: int = MOTION_FRAMES) -> int:
    """How many windows the sampler runs for ``frames`` frames of audio embedding."""
    if window >= frames:
        return 1
    return 1 + math.ceil((frames - window) / (window - motion))


def generated_frames(frames: int, window: int = WINDOW_FRAMES, motion: int = MOTION_FRAMES) -> int:
    """Frames the sampler decodes: whole windows, so the last one runs past the audio (trimmed later)."""
    return window + (window_count(frames, window, motion) - 1) * (window - motion)


def held_frame_bytes(frames: int, width: int, height: int, window: int = WINDOW_FRAMES,
                     motion: int = MOTION_FRAMES, source_frames: int = 0) -> int:
    """Host memory the video takes at its peak in the shipped graphs (RGB, see above).

    ``source_frames``: frames of an input video (video-to-video), held beside the generated ones.
    """
    values = width * height * 3
    generated = generated_frames(frames, window, motion) * values * HELD_BYTES_PER_VALUE
    return generated + source_frames * values * SOURCE_BYTES_PER_VALUE


def encode_gpu_bytes(source_frames: int, width: int, height: int) -> int:
    """GPU memory ``WanVideoEncode`` takes for the source clip alone (video input)."""
    return source_frames * width * height * 3 * ENCODE_GPU_BYTES_PER_VALUE
