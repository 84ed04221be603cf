"""Real media files made on the fly for tests: PNG/JPEG portraits, speech-like audio, short videos."""

from __future__ import annotations

import io
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw


def make_image(path: Path, size: tuple[int, int] = (96, 128), fmt: str = "PNG") -> Path:
    image = Image.new("RGB", size, (200, 170, 150))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.2, h * 0.15, w * 0.8, h * 0.85), fill=(230, 190, 160))
    draw.ellipse((w * 0.35, h * 0.4, w * 0.45, h * 0.48), fill=(30, 30, 30))
    draw.ellipse((w * 0.55, h * 0.4, w * 0.65, h * 0.48), fill=(30, 30, 30))
    draw.rectangle((w * 0.4, h * 0.65, w * 0.6, h * 0.7), fill=(150, 40, 40))
    image.save(path, fmt)
    return path


def tone(seconds: float, rate: int = 16000, frequency: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def make_wav(path: Path, seconds: float = 1.0, rate: int = 16000, frequency: float = 220.0) -> Path:
    pcm = (tone(seconds, rate, frequency) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as sink:
        sink.setnchannels(1)
        sink.setsampwidth(2)
        sink.setframerate(rate)
        sink.writeframes(pcm.tobytes())
    return path


def make_encoded_audio(path: Path, seconds: float = 1.0, codec: str = "libmp3lame", container: str = "mp3",
                       rate: int = 48000, options: dict[str, str] | None = None) -> Path:
    """Compressed audio (MP3, AAC in M4A, FLAC, Opus in OGG; WAVs of other codecs) encoded with PyAV."""
    with av.open(str(path), "w", format=container, options=options or {}) as output:
        stream = output.add_stream(codec, rate=rate, layout="mono")
        _encode_tone(output, stream, seconds)
    return path


def _encode_tone(output, stream, seconds: float) -> None:
    """Feed a tone through a resampler that cuts frames to the encoder's own frame size."""
    context = stream.codec_context
    resampler = av.AudioResampler(format=context.format.name, layout="mono", rate=context.rate,
                                  frame_size=context.frame_size or None)
    samples = tone(seconds, context.rate)
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = context.rate, 0, Fraction(1, context.rate)
    for converted in resampler.resample(frame) + resampler.resample(None):
        for packet in stream.encode(converted):
            output.mux(packet)
    for packet in stream.encode(None):
        output.mux(packet)


def make_video(path: Path, seconds: float = 1.0, size: tuple[int, int] = (64, 48), fps: int = 25,
               with_audio: bool = False, faststart: bool = False, audio_seconds: float | None = None) -> Path:
    """An H.264 MP4 whose frames change over time (so it is a real moving video).

    ``faststart`` puts the index (``moov``) before the frames, as files made for streaming have it;
    ``audio_seconds`` makes the sound track longer or shorter than the picture.
    """
    frames = int(seconds * fps)
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as output:
        video = output.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = output.add_stream("aac", rate=48000, layout="mono") if with_audio else None
        for index in range(frames):
            pixels = np.full((size[1], size[0], 3), (index * 7) % 255, dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                output.mux(packet)
        for packet in video.encode(None):
            output.mux(packet)
        if audio is not None:
            _encode_tone(output, audio, seconds if audio_seconds is None else audio_seconds)
    return path


def png_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def probe(path: Path) -> dict:
    """Size, frames, fps and audio length of an MP4, decoded for real."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        facts = {"width": video.codec_context.width, "height": video.codec_context.height,
                 "fps": float(video.average_rate or video.guessed_rate), "audio_seconds": None}
        facts["frames"] = sum(1 for _ in container.decode(video))
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(stream))
            facts["audio_seconds"] = samples / stream.rate
    return facts
