"""Probing: prove from the bytes that an input is the image, audio or video its field says, whole.

Pillow and PyAV decode what is there; a file cut short often still decodes (a WAV cut to its first
hundred bytes plays for 3 ms), so a file is also refused when it holds less than it says it does:
its container's size fields (RIFF, ISO-BMFF), its declared frame count or its declared duration.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import av
from PIL import Image

from .config import Settings
from .constants import FPS, MIN_AUDIO_SECONDS
from .errors import InputError, english_list

IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff", "MPO": "jpg", "GIF": "gif"}
IMAGE_FORMAT_NAMES = english_list(dict.fromkeys({"WEBP": "WebP", "MPO": "JPEG"}.get(f, f) for f in IMAGE_FORMATS))
CONTAINER_SUFFIXES = {"mov": ".mp4", "matroska": ".mkv", "wav": ".wav", "mp3": ".mp3", "ogg": ".ogg", "flac": ".flac"}
UNKNOWN_RIFF_SIZES = (0, 0xFFFFFFFF)  # written by streaming encoders that cannot seek back
MAX_BOXES = 10_000  # top-level ISO-BMFF boxes read; real files have a handful
BOX_TYPE = re.compile(rb"[A-Za-z0-9 \xa9]{4}")  # four letters, digits, spaces or ©


def truncated(key: str, kind: str, detail: str) -> InputError:
    return InputError(key, f"the {kind} file is truncated: {detail}; send the whole file.")


# -- images ----------------------------------------------------------------------------------------


EXIF_ORIENTATION = 0x0112
SIDEWAYS_ORIENTATIONS = {5, 6, 7, 8}  # transposed or rotated by 90/270 degrees


def check_image(path: Path, key: str, settings: Settings) -> tuple[int, int]:
    """Prove the bytes are a whole, decodable still image within the pixel limit; return its size upright.

    The size is the picture as ComfyUI's LoadImage shows it (``ImageOps.exif_transpose``): a phone photo
    stored sideways with an EXIF orientation of 5-8 is taller than it is wide.
    """
    refuse_short_container(path, key, "image")
    try:
        with Image.open(path) as image:
            if image.format not in IMAGE_FORMATS:
                raise InputError(key, f"{image.format} images are not accepted; send {IMAGE_FORMAT_NAMES}.")
            width, height = image.size
            if width * height > settings.max_image_pixels:
                raise InputError(
                    key, f"the image is {width}x{height} pixels, over the limit of {settings.max_image_pixels} pixels."
                )
            image.load()
            if image.getexif().get(EXIF_ORIENTATION) in SIDEWAYS_ORIENTATIONS:
                width, height = height, width
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(key, f"the image is over the limit of {settings.max_image_pixels} pixels.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if "truncated" in str(exc).lower():  # Pillow: "image file is truncated", "Truncated File Read"
            raise truncated(key, "image", "it ends before its picture data does") from None
        raise InputError(key, f"the data is not a readable image ({reason(exc)}).") from None
    return width, height


# -- audio -----------------------------------------------------------------------------------------


WAV_MAGIC = (b"RIFF", b"RF64", b"BW64")
# A WAV header says all there is to know; FFmpeg would still read up to 5 MB of samples (about 10 ms per
# open) looking for stream parameters. 4 KB gives identical streams (PCM, ADPCM, MP3-in-WAV, RF64,
# a streamed WAV with no data size): tests/test_probe.py.
WAV_OPTIONS = {"probesize": "4096"}


def open_media(path: Path) -> av.container.InputContainer:
    """``av.open`` for reading, with FFmpeg's stream probe cut short for WAV files."""
    with open(path, "rb") as handle:
        head = handle.read(12)
    is_wav = head[:4] in WAV_MAGIC and head[8:12] == b"WAVE"
    return av.open(str(path), options=WAV_OPTIONS if is_wav else {})


def probe_audio_track(path: Path, key: str, settings: Settings) -> tuple[int, int]:
    """(samples, sample rate) of the first audio track as ComfyUI's LoadAudio decodes it (PyAV).

    The whole track is decoded: that proves it playable and gives its exact length.
    """
    refuse_short_container(path, key, "audio")
    try:
        with open_media(path) as container:
            if not container.streams.audio:
                raise InputError(key, "the data is not audio (no audio track found).")
            samples, rate = _decoded_samples(container, key, settings.max_audio_seconds)
            declared = _declared_seconds(container, container.streams.audio[0])
    except InputError:
        raise
    except av.error.EOFError:
        raise truncated(key, "audio", "it ends in the middle of its data") from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(key, f"the data is not readable audio ({reason(exc)}).") from None
    _refuse_short_of_declared(key, "audio", samples / rate, declared)
    if samples / rate < MIN_AUDIO_SECONDS:
        raise InputError(key, f"the audio is {samples / rate:.3f} s long; at least {MIN_AUDIO_SECONDS:g} s "
                              f"({round(MIN_AUDIO_SECONDS * FPS)} frames at {FPS} fps) is needed.")
    return samples, rate


def _decoded_samples(container: av.container.InputContainer, key: str, limit: float) -> tuple[int, int]:
    stream = container.streams.audio[0]
    samples, rate = 0, stream.rate or stream.codec_context.sample_rate
    try:
        for frame in container.decode(stream):
            samples += frame.samples
            rate = frame.sample_rate or rate
            if rate and samples / rate > limit:
                raise InputError(key, f"the audio is longer than the {limit:g}-second limit.")
    except av.error.InvalidDataError as exc:
        if not samples or not rate:
            raise
        raise InputError(key, f"the audio file is damaged or cut short: decoding stops after {samples / rate:.2f} s "
                              f"({reason(exc)}); send the whole file.") from None
    if not samples or not rate:
        raise InputError(key, "the audio track is empty.")
    return samples, rate


def _declared_seconds(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    """The stream's own declared length; the container's only when the stream is all it holds (the
    container's is the longest stream's, and a video's sound may well outlast its picture)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if len(container.streams) == 1 and container.duration:
        return container.duration / av.time_base
    return None


def _refuse_short_of_declared(key: str, kind: str, found: float, declared: float | None) -> None:
    """An MP3 with a frame count in its header, or a FLAC, that decodes to less than it declares.

    The slack absorbs encoder delay and rounding (an AAC track decodes a few ms longer or shorter).
    """
    if declared and declared - found > max(0.05, 0.02 * declared):
        raise truncated(key, kind, f"its header promises {declared:.2f} s but only {found:.2f} s are there")


# -- video -----------------------------------------------------------------------------------------


class VideoProbe(NamedTuple):
    """What a job needs to know of a source video: its length, and its picture's shape for ``resolution``."""

    seconds: float
    size: tuple[int, int]


def probe_video(path: Path, key: str, settings: Settings) -> VideoProbe:
    """Prove the bytes are a whole, moving video (not a still image) and return its duration and size.

    One open: the declared length first (a video over the limit is refused without reading it), then
    every packet once (``_read_through``).
    """
    refuse_short_container(path, key, "video")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video or _is_still_image(container):
                raise InputError(key, "the data is not a video (no video track found).")
            stream = container.streams.video[0]
            seconds = _container_seconds(container, stream)
            if seconds > settings.max_video_seconds:
                raise InputError(
                    key, f"the video is {seconds:.1f} s long, over the {settings.max_video_seconds:g}-second limit."
                )
            size = _read_through(container, stream, key)
    except InputError:
        raise
    except av.error.EOFError:
        raise truncated(key, "video", "it ends in the middle of its data") from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(key, f"the data is not a readable video ({reason(exc)}).") from None
    return VideoProbe(seconds, size)


def _is_still_image(container: av.container.InputContainer) -> bool:
    name = container.format.name
    return name == "image2" or name.endswith("_pipe")


def _container_seconds(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if container.duration:
        return container.duration / av.time_base
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return (stream.frames or 1) / FPS


def _read_through(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                  key: str) -> tuple[int, int]:
    """Read every video packet (decoding only up to the first picture, for its size) and compare the
    packets with the frames or length the header declares: a video cut short is refused."""
    size, packets, end = None, 0, 0.0
    for packet in container.demux(stream):
        if size is None:  # the last, empty packet flushes the decoder: a very short clip still shows a frame
            size = next(((frame.width, frame.height) for frame in packet.decode()), None)
        if packet.size and packet.pts is not None:
            packets += 1
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
    if size is None:
        raise InputError(key, "the video has no frames.")
    if stream.frames and packets < stream.frames:
        raise truncated(key, "video", f"its header promises {stream.frames} frames but only {packets} are there")
    start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    _refuse_short_of_declared(key, "video", end - start, _declared_seconds(container, stream))
    return size


# -- container structure ---------------------------------------------------------------------------


def refuse_short_container(path: Path, key: str, kind: str) -> None:
    """Refuse a file shorter than its own container's size fields say (a WAV or MP4 cut short)."""
    detail = container_shortfall(path)
    if detail:
        raise truncated(key, kind, detail)


def container_shortfall(path: Path) -> str | None:
    """What a RIFF (WAV, WebP, AVI) or ISO-BMFF (MP4, MOV, M4A) file's size fields say is missing.

    FFmpeg reads a cut WAV as the shorter sound it holds, and reports a cut MP4 only as invalid data;
    the container's own sizes say plainly that the file was cut.
    """
    size = path.stat().st_size
    with open(path, "rb") as source:
        head = source.read(12)
        if head[:4] == b"RIFF" and len(head) >= 8:
            declared = int.from_bytes(head[4:8], "little")
            if declared not in UNKNOWN_RIFF_SIZES and declared + 8 > size + 1:  # +1: an odd chunk's pad byte
                return f"its header promises {declared + 8} bytes but it holds {size}"
        elif head[4:8] == b"ftyp":
            return _box_shortfall(source, size)
    return None


def _box_shortfall(source, size: int) -> str | None:
    offset = 0
    for _ in range(MAX_BOXES):
        if offset >= size:
            return None
        source.seek(offset)
        header = source.read(16)
        if len(header) < 8 or not BOX_TYPE.fullmatch(header[4:8]):
            return None  # trailing bytes that are not a box: the decoder judges them
        box, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if box == 1 and len(header) == 16:
            box = int.from_bytes(header[8:16], "big")
        if box == 0:
            return None  # the last box, running to the end of the file
        if box < 8:
            return None
        if offset + box > size:
            return f"its {kind.decode('latin-1')!r} box needs {offset + box} bytes but the file holds {size}"
        offset += box
    return None


# -- names -----------------------------------------------------------------------------------------


def rename_by_content(path: Path, kind: str) -> Path:
    """Give a fetched file the extension of what it is, for loaders that look at names."""
    suffix = _detected_suffix(path, kind)
    if path.suffix == suffix:
        return path
    renamed = path.with_suffix(suffix)
    path.rename(renamed)
    return renamed


def _detected_suffix(path: Path, kind: str) -> str:
    if kind == "image":
        with Image.open(path) as image:
            return "." + IMAGE_FORMATS.get(image.format or "", "png")
    with open_media(path) as container:
        name = container.format.name.split(",")[0]
    return CONTAINER_SUFFIXES.get(name, f".{name}")


def reason(exc: BaseException) -> str:
    """The decoder's words without the file path (which is the worker's own business), cut short."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    text = re.sub(r"""\s*:?\s*['"]?/[^'"\s]*['"]?""", "", text.splitlines()[0]).strip()
    return text[:160] or type(exc).__name__
