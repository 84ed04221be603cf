"""Files the worker makes from the inputs: the soundtrack (every job) and the speaker masks (two speakers).

The soundtrack is always 48 kHz: VideoHelperSuite pads the sound and cuts it with ffmpeg's ``-shortest``,
which overruns the picture by whole AAC frames, and at an upload's 16 kHz a frame is 64 ms (0.25 s too
long for 1.5 s of speech in the rehearsal; at 48 kHz within a frame of the picture).
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from .probe import open_media

SOUNDTRACK_RATE = 48000
# Left and right half, inset as the model authors do: a region (or the background) with no area
# makes kijai's masked attention divide by zero, and then no face follows its voice.
DEFAULT_SPEAKER_BOXES = ((0.05, 0.1, 0.45, 0.9), (0.55, 0.1, 0.95, 0.9))

Box = Sequence[float]


def make_soundtrack(paths: list[Path], mode: str, target: Path) -> Path:
    """The user's own voices as the video's sound: summed on one timeline (para) or one after another (add)."""
    tracks = [_decode_stereo(path) for path in paths]
    if mode == "add":
        mixed = np.concatenate(tracks)
    else:
        mixed = np.zeros((max(len(t) for t in tracks), 2), dtype=np.float32)
        for track in tracks:
            mixed[: len(track)] += track
    return write_wav(target, mixed, SOUNDTRACK_RATE)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit PCM WAV of float samples in -1..1: shape (n,) for mono, (n, channels) interleaved."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as sink:
        sink.setnchannels(1 if pcm.ndim == 1 else pcm.shape[1])
        sink.setsampwidth(2)
        sink.setframerate(rate)
        sink.writeframes(pcm.tobytes())
    return path


def _decode_stereo(path: Path) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="stereo", rate=SOUNDTRACK_RATE)
    chunks: list[np.ndarray] = []
    with open_media(path) as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1, 2) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1, 2) for out in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.float32)


def make_speaker_masks(boxes: Sequence[Box], size: tuple[int, int], job_dir: Path) -> dict[str, Path]:
    """One white-on-black PNG per speaker region plus the background, at the generation's size."""
    width, height = size
    union = Image.new("L", size, 0)
    files: dict[str, Path] = {}
    for index, (x0, y0, x1, y1) in enumerate(boxes, start=1):
        mask = Image.new("L", size, 0)
        rectangle = (round(x0 * width), round(y0 * height), round(x1 * width) - 1, round(y1 * height) - 1)
        ImageDraw.Draw(mask).rectangle(rectangle, fill=255)
        ImageDraw.Draw(union).rectangle(rectangle, fill=255)
        files[f"speaker_mask_{index}"] = _save_mask(mask, job_dir / f"speaker_mask_{index}.png")
    background = union.point(lambda v: 255 - v)
    files["speaker_mask_background"] = _save_mask(background, job_dir / "speaker_mask_background.png")
    return files


def _save_mask(mask: Image.Image, path: Path) -> Path:
    """Grey PNG: ComfyUI's LoadImageMask turns it into RGBA and reads the red channel, which is the grey."""
    mask.save(path, compress_level=1)
    return path
