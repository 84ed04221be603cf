"""Output delivery: the finished MP4 as raw Base64, a file on the network volume, or an S3 link.

A result too large for RunPod's response limit is never dropped: it goes to the volume or S3 when
one is available and is otherwise a clear error. Keys that Engui Studio would mistake for the
result (``s3_path``, ``output_path``, ``image_path``, ``image``, ``image_url``) never appear.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import av

from .config import Settings
from .constants import FPS
from .errors import DeliveryError
from .request import JobRequest

log = logging.getLogger(__name__)

FORBIDDEN_KEYS = frozenset({"s3_path", "output_path", "image_path", "image", "image_url"})
BASE64_READ_BYTES = 3 * (1 << 20)


class JobOutput(dict):
    """A result whose repr lists keys, not values.

    The RunPod SDK formats every result into f-string debug lines (built even when debug logging
    is off), which would copy a whole Base64 video once more and put it in any log that shows them.
    """

    def __repr__(self) -> str:
        return f"<job output with keys {', '.join(map(str, self))}>"

    __str__ = __repr__


def video_metadata(path: Path) -> dict[str, Any]:
    """What the caller can check without decoding the video: size, length, frames, rate."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = stream.frames or sum(1 for _ in container.demux(stream) if _.size)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            duration = container.duration / av.time_base if container.duration else frames / (fps or FPS)
            return {
                "duration_s": round(duration, 3),
                "frames": frames,
                "fps": round(fps, 3),
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
            }
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise DeliveryError(f"ComfyUI's output is not a readable video ({type(exc).__name__}).") from None


def volume_mounted(settings: Settings) -> bool:
    return settings.volume_root.is_dir() and os.access(settings.volume_root, os.W_OK)


def check_destination(request: JobRequest, settings: Settings) -> str:
    """The destination the request asks for, refused before any generation if it cannot take a video:
    finding out after minutes of GPU time would waste them."""
    asked, key = request.destination
    if asked == "volume" and not volume_mounted(settings):
        raise DeliveryError(
            f"{key}: the network volume was requested, but nothing writable is mounted at {settings.volume_root}."
        )
    if asked == "s3" and not settings.s3_configured:
        from .s3_delivery import require_settings

        require_settings(settings)
    return asked


def choose_destination(request: JobRequest, encoded_size: int, settings: Settings) -> str:
    """Where the video goes: what was asked, or the volume/S3 when Base64 would be too large."""
    asked = check_destination(request, settings)
    if asked != "base64" or encoded_size <= settings.inline_output_limit_bytes:
        return asked
    if volume_mounted(settings):
        return "volume"
    if settings.s3_configured:
        return "s3"
    raise DeliveryError(
        f"The video is {encoded_size / 1e6:.1f} MB as Base64, over the "
        f"{settings.inline_output_limit_bytes / 1e6:.1f} MB that RunPod can return inline; attach a network volume "
        "or set BUCKET_NAME, BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY to receive large results."
    )


def deliver(video: Path, request: JobRequest, name: str, settings: Settings,
            metadata: dict[str, Any]) -> dict[str, Any]:
    """Hand the video back the way the request and the size allow, with the metadata beside it."""
    encoded_size = (video.stat().st_size + 2) // 3 * 4
    destination = choose_destination(request, encoded_size, settings)
    started = time.monotonic()
    if destination == "volume":
        result = {"video_path": str(write_to_volume(video, name, settings))}
    elif destination == "s3":
        from .s3_delivery import upload_video

        result = {"video_url": upload_video(video, f"{name}.mp4", settings)}
    else:
        result = {"video": encode_base64(video)}
    timings = dict(metadata.get("timings", {}), delivery_s=round(time.monotonic() - started, 3))
    result = JobOutput(result, **metadata)
    result.update(timings=timings, delivered_as=destination)
    if destination != request.destination[0]:
        result["warnings"] = [*metadata.get("warnings", []), moved_warning(destination, encoded_size, settings)]
    leaked = FORBIDDEN_KEYS & result.keys()
    if leaked:
        raise AssertionError(f"delivery produced forbidden keys {sorted(leaked)}")
    return result


def moved_warning(destination: str, encoded_size: int, settings: Settings) -> str:
    """Why a result asked for inline has no ``video`` key, and which key to read: a client that reads
    only ``video`` (Engui Studio's September and October 2025 releases) would otherwise show nothing."""
    where = {
        "volume": "written to the network volume: read `video_path`",
        "s3": f"uploaded to S3: read `video_url` (a link valid for {settings.s3_url_expiry_s} s)",
    }[destination]
    return (
        f"The video is {encoded_size / 1e6:.1f} MB as Base64, over the "
        f"{settings.inline_output_limit_bytes / 1e6:.1f} MB returned inline (INLINE_OUTPUT_LIMIT_BYTES), "
        f"so it was {where}. This result has no `video` key; a client that reads only `video` shows nothing."
    )


def encode_base64(video: Path) -> str:
    """Raw Base64, no ``data:`` prefix (legacy clients decode it as is), built in chunks."""
    parts = []
    with open(video, "rb") as source:
        while chunk := source.read(BASE64_READ_BYTES):
            parts.append(base64.b64encode(chunk).decode("ascii"))
    return "".join(parts)


def write_to_volume(video: Path, name: str, settings: Settings) -> Path:
    """Copy under a unique name, atomically: a reader never sees a partial file under the final name."""
    final = settings.volume_root / f"{name}.mp4"
    partial = final.with_name(f".{final.name}.part")
    try:
        with open(video, "rb") as source, open(partial, "wb") as sink:
            shutil.copyfileobj(source, sink, 1 << 20)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(partial, final)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DeliveryError(f"Writing the video to the network volume failed: {exc.strerror or exc}.") from None
    return final
