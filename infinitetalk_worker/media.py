"""Media inputs: bring each image, video and audio into the job's directory and prove what it is.

A source is a path under an allowed root, an http(s) URL on a public address, or Base64 (with or
without a ``data:`` prefix). Content is judged from the bytes, never from a name or a MIME claim,
and every read is bounded in size and time so no request can exhaust the disk, memory or clock.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import ipaddress
import logging
import re
import shutil
import socket
import threading
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urljoin, urlsplit

import av
import numpy as np
import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions
import urllib3.util.connection
from PIL import Image, ImageDraw

from .config import REPO_ROOT, Settings
from .errors import InputError, WorkerError, english_list, shown, shown_url
from .request import JobRequest

log = logging.getLogger(__name__)

FPS = 25
MAX_REDIRECTS = 5
CHUNK_BYTES = 1 << 20
BASE64_CHUNK_CHARS = 4 * (1 << 20)
SOUNDTRACK_RATE = 48000
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff", "MPO": "jpg", "GIF": "gif"}
IMAGE_FORMAT_NAMES = english_list(dict.fromkeys({"WEBP": "WebP", "MPO": "JPEG"}.get(f, f) for f in IMAGE_FORMATS))
DATA_URI_FAMILIES = {"image": ("image",), "video": ("video", "image/gif"), "audio": ("audio", "video")}
BASE64_CLEANUP = str.maketrans("-_", "+/", " \t\n\r\v\f")  # URL-safe to standard, whitespace out
NOT_STANDARD_BASE64 = re.compile(r"[-_\s]")
# Left and right half, inset as the model authors do: a region (or the background) with no area
# makes kijai's masked attention divide by zero, and then no face follows its voice.
DEFAULT_SPEAKER_BOXES = ((0.05, 0.1, 0.45, 0.9), (0.55, 0.1, 0.95, 0.9))


@dataclass
class PreparedMedia:
    """Files in the job directory (or under an allowed root) that the graph will read."""

    files: dict[str, Path] = field(default_factory=dict)
    audio_seconds: dict[str, float] = field(default_factory=dict)
    audio_tracks: dict[str, tuple[int, int]] = field(default_factory=dict)  # slot -> (samples, rate) decoded
    image_size: tuple[int, int] | None = None
    video_seconds: float | None = None


def slot_kind(slot: str) -> str:
    return "audio" if slot.startswith("audio") else slot


@contextlib.contextmanager
def job_directory(settings: Settings, job_id: str) -> Iterator[Path]:
    """A private directory for one job, removed when the job ends whatever the outcome."""
    safe_id = re.sub(r"[^A-Za-z0-9_-]", "", job_id)[:40] or "job"
    path = settings.job_root / f"{safe_id}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True, mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def prepare_media(request: JobRequest, job_dir: Path, settings: Settings) -> PreparedMedia:
    """Fetch and check every input the job needs, then build the derived files (soundtrack, masks)."""
    try:
        return _prepare(request, job_dir, settings)
    except OSError as exc:  # the worker's own disk, not the request, failed
        hint = " (free disk space under JOB_ROOT or give the worker a larger disk)" if exc.errno == errno.ENOSPC else ""
        raise WorkerError(f"The worker could not write the job's input files: {exc.strerror or exc}{hint}.") from None


def _prepare(request: JobRequest, job_dir: Path, settings: Settings) -> PreparedMedia:
    media = PreparedMedia()
    for slot in request.needed_slots():
        key, value = request.source_of(slot)
        path = fetch_source(slot, key, value, job_dir, settings)
        _probe(slot, key, path, media, settings)
        media.files[slot] = rename_by_content(path, slot) if path.parent == job_dir else path
    if request.person_count == "multi":
        media.files["soundtrack"] = make_soundtrack(
            [media.files["audio_1"], media.files["audio_2"]], request.multi_audio_type, job_dir / "soundtrack.wav"
        )
        boxes = request.speaker_boxes or DEFAULT_SPEAKER_BOXES
        media.files.update(make_speaker_masks(boxes, request.rounded_size, job_dir))
    return media


def _probe(slot: str, key: str, path: Path, media: PreparedMedia, settings: Settings) -> None:
    kind = slot_kind(slot)
    if kind == "image":
        media.image_size = check_image(path, key, settings)
    elif kind == "video":
        media.video_seconds = probe_video(path, key, settings)
    else:
        samples, rate = probe_audio_track(path, key, settings)
        media.audio_tracks[slot] = (samples, rate)
        media.audio_seconds[slot] = samples / rate


def fetch_source(slot: str, key: str, value: str, job_dir: Path, settings: Settings) -> Path:
    """Return a local file holding the slot's bytes, named by what the bytes turn out to be."""
    if key.endswith(("_path", "_path_2")):
        return resolve_input_path(key, value, settings)
    target = job_dir / f"{slot}.bin"
    if key.endswith(("_url", "_url_2")):
        download_url(key, value, target, settings)
    else:
        decode_base64(key, value, slot_kind(slot), target, settings)
    if target.stat().st_size == 0:
        raise InputError(key, "is empty.")
    return target


def resolve_input_path(key: str, value: str, settings: Settings) -> Path:
    """A path is accepted only inside an allowed root, after resolving links, and must be a file."""
    raw = Path(value)
    if ".." in raw.parts:
        raise InputError(key, "must not contain '..'.")
    path = (raw if raw.is_absolute() else REPO_ROOT / raw).resolve()
    roots = [root.resolve() for root in settings.input_roots]
    if not any(path == root or root in path.parents for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise InputError(key, f"{shown(value)} is outside the directories inputs may come from ({allowed}).")
    if path.name.endswith("]"):
        raise InputError(key, "file names ending in ']' are not accepted (ComfyUI reads them as annotations).")
    if not path.is_file():
        raise InputError(key, f"{shown(value)} does not exist or is not a file.")
    if path.stat().st_size == 0:
        raise InputError(key, f"{shown(value)} is empty.")
    return path


def check_public_url(key: str, url: str, settings: Settings) -> str | None:
    """Refuse non-http(s) schemes and hosts resolving to non-public space; return the address checked.

    The download then connects to exactly that address, so a name that answers differently a moment
    later (DNS rebinding) cannot steer it elsewhere. ``None`` when private addresses are allowed.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InputError(key, f"only http and https URLs are accepted, not {shown(parts.scheme) if parts.scheme else 'a bare path'}.")
    if not parts.hostname:
        raise InputError(key, "the URL has no host.")
    if settings.allow_private_urls:
        return None
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(key, f"the host {shown(parts.hostname)} could not be resolved ({exc}).") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global or address.is_multicast:
            raise InputError(
                key, f"the host {shown(parts.hostname)} resolves to {address}, a non-public address the worker does not fetch."
            )
    return infos[0][4][0]


def download_url(key: str, url: str, target: Path, settings: Settings) -> None:
    """Stream a URL to disk, checking every redirect hop and bounding size and total time."""
    session = requests.Session()
    session.trust_env = False  # no proxies from the environment: the address check must be the real target
    deadline = time.monotonic() + settings.download_total_timeout_s
    sockets: list[socket.socket] = []
    # Slow headers, slow redirects and trickled bodies all dodge the per-read timeout; at the
    # deadline every socket of this download is shut down, which wakes whatever read is blocked.
    watchdog = threading.Timer(settings.download_total_timeout_s, _shut_all, args=(sockets,))
    watchdog.daemon = True
    watchdog.start()
    try:
        response = _follow_redirects(session, key, url, settings, sockets)
        with response, open(target, "wb") as sink:
            _stream_body(response, key, sink, settings, deadline)
    except (requests.RequestException, OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
        if time.monotonic() >= deadline - 0.05:
            raise InputError(key, f"the download took longer than {settings.download_total_timeout_s:g} s.") from None
        if isinstance(exc, requests.Timeout):
            raise InputError(key, f"the download from {_shown(url)} timed out.") from None
        raise InputError(key, f"the download from {_shown(url)} failed: {type(exc).__name__}.") from None
    finally:
        watchdog.cancel()
        session.close()


def _shut_all(sockets: list[socket.socket]) -> None:
    for sock in list(sockets):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _follow_redirects(session: requests.Session, key: str, url: str, settings: Settings,
                      sockets: list[socket.socket]) -> requests.Response:
    timeout = (settings.download_connect_timeout_s, settings.download_read_timeout_s)
    for _ in range(MAX_REDIRECTS + 1):
        address = check_public_url(key, url, settings)
        session.mount(f"{urlsplit(url).scheme}://", GuardedAdapter(address, sockets))
        response = session.get(url, stream=True, timeout=timeout, allow_redirects=False)
        if response.is_redirect:
            response.close()
            url = urljoin(url, response.headers.get("location", ""))
            continue
        if response.status_code != 200:
            response.close()
            raise InputError(key, f"{_shown(url)} answered HTTP {response.status_code}.")
        return response
    raise InputError(key, f"the URL redirected more than {MAX_REDIRECTS} times.")


class GuardedAdapter(requests.adapters.HTTPAdapter):
    """Connects to the checked address (when given) and records each socket for the deadline.

    Only the TCP connection uses the address; the Host header, SNI and certificate check keep the name.
    """

    def __init__(self, address: str | None, sockets: list[socket.socket]) -> None:
        self.address, self.sockets = address, sockets
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _guarded_pools(self.address, self.sockets)


def _guarded_pools(address: str | None, sockets: list[socket.socket]) -> dict[str, type]:
    def new_conn(connection: urllib3.connection.HTTPConnection) -> socket.socket:
        target = address or connection._dns_host
        try:
            sock = urllib3.util.connection.create_connection(
                (target, connection.port), connection.timeout, source_address=connection.source_address,
                socket_options=connection.socket_options)
        except OSError as exc:
            raise urllib3.exceptions.NewConnectionError(connection, f"cannot connect to {target}: {exc}") from exc
        sockets.append(sock)
        return sock

    plain = type("GuardedHTTPConnection", (urllib3.connection.HTTPConnection,), {"_new_conn": new_conn})
    tls = type("GuardedHTTPSConnection", (urllib3.connection.HTTPSConnection,), {"_new_conn": new_conn})
    return {
        "http": type("GuardedHTTPPool", (urllib3.HTTPConnectionPool,), {"ConnectionCls": plain}),
        "https": type("GuardedHTTPSPool", (urllib3.HTTPSConnectionPool,), {"ConnectionCls": tls}),
    }


def _stream_body(response: requests.Response, key: str, sink, settings: Settings, deadline: float) -> None:
    limit = settings.max_download_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InputError(key, f"the file is {int(declared)} bytes, over the {limit}-byte download limit.")
    received = 0
    for chunk in response.iter_content(CHUNK_BYTES):
        received += len(chunk)
        if received > limit:
            raise InputError(key, f"the file is larger than the {limit}-byte download limit.")
        if time.monotonic() > deadline:
            raise InputError(key, f"the download took longer than {settings.download_total_timeout_s:g} s.")
        sink.write(chunk)


def _shown(url: str) -> str:
    """A URL without its query string, which may carry a signature, for messages and logs."""
    return shown_url(url)


def decode_base64(key: str, value: str, kind: str, target: Path, settings: Settings) -> None:
    """Decode Base64 (optionally a data URI) to disk in chunks, so a large input is never copied whole.

    Line breaks, the URL-safe alphabet and missing padding are cleaned up chunk by chunk as well: a
    clean-up of the whole string would copy it (and, for line breaks, split it into one string per line).
    """
    payload = _strip_data_uri(key, value, kind)
    if len(payload) > settings.max_base64_bytes:
        raise InputError(key, f"is {len(payload)} characters, over the {settings.max_base64_bytes}-character limit.")
    carry = ""  # the characters of the last chunk that do not make a whole 4-character group yet
    try:
        with open(target, "wb") as sink:
            for start in range(0, len(payload), BASE64_CHUNK_CHARS):
                chunk = carry + _standard_base64(payload[start : start + BASE64_CHUNK_CHARS])
                whole = len(chunk) - len(chunk) % 4
                sink.write(base64.b64decode(chunk[:whole], validate=True))
                carry = chunk[whole:]
            if carry:
                sink.write(base64.b64decode(carry + "=" * (-len(carry) % 4), validate=True))
    except (binascii.Error, ValueError):
        raise InputError(key, "is not valid Base64.") from None


def _standard_base64(chunk: str) -> str:
    """A chunk without whitespace, in the standard alphabet ('-' and '_' become '+' and '/')."""
    return chunk.translate(BASE64_CLEANUP) if NOT_STANDARD_BASE64.search(chunk) else chunk


def _strip_data_uri(key: str, value: str, kind: str) -> str:
    if not value.startswith("data:"):
        return value
    header, comma, payload = value.partition(",")
    if not comma or not header.endswith(";base64"):
        raise InputError(key, "is a data URI without ';base64,'; send the file's bytes as Base64.")
    mime = header[5:].split(";")[0].strip().lower()
    accepted = DATA_URI_FAMILIES[kind]
    if mime and mime != "application/octet-stream" and not mime.startswith(tuple(f"{a}" for a in accepted)):
        raise InputError(key, f"the data URI says {shown(mime)}, but this field takes {kind} data.")
    return payload


def check_image(path: Path, key: str, settings: Settings) -> tuple[int, int]:
    """Prove the bytes are a decodable still image within the pixel limit; return its size."""
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
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(key, f"the image is over the limit of {settings.max_image_pixels} pixels.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(key, f"the data is not a readable image ({_reason(exc)}).") from None
    return width, height


def probe_audio(path: Path, key: str, settings: Settings) -> float:
    """Decode the whole first audio track: proves it is playable and gives its exact length."""
    samples, rate = probe_audio_track(path, key, settings)
    return samples / rate


def probe_audio_track(path: Path, key: str, settings: Settings) -> tuple[int, int]:
    """(samples, sample rate) of the first audio track as ComfyUI's LoadAudio decodes it (PyAV)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InputError(key, "the data is not audio (no audio track found).")
            return _decoded_samples(container, key, settings.max_audio_seconds)
    except InputError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(key, f"the data is not readable audio ({_reason(exc)}).") from None


def _decoded_samples(container, key: str, limit: float) -> tuple[int, int]:
    stream = container.streams.audio[0]
    samples, rate = 0, stream.rate or stream.codec_context.sample_rate
    for frame in container.decode(stream):
        samples += frame.samples
        rate = frame.sample_rate or rate
        if rate and samples / rate > limit:
            raise InputError(key, f"the audio is longer than the {limit:g}-second limit.")
    if not samples or not rate:
        raise InputError(key, "the audio track is empty.")
    return samples, rate


def probe_video(path: Path, key: str, settings: Settings) -> float:
    """Prove the bytes are a moving video (not a still image) and return its duration."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video or _is_still_image(container):
                raise InputError(key, "the data is not a video (no video track found).")
            stream = container.streams.video[0]
            next(container.decode(stream))
            seconds = _container_seconds(container, stream)
    except InputError:
        raise
    except StopIteration:
        raise InputError(key, "the video has no frames.") from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InputError(key, f"the data is not a readable video ({_reason(exc)}).") from None
    if seconds > settings.max_video_seconds:
        raise InputError(key, f"the video is {seconds:.1f} s long, over the {settings.max_video_seconds:g}-second limit.")
    return seconds


def _is_still_image(container) -> bool:
    name = container.format.name
    return name == "image2" or name.endswith("_pipe")


def _container_seconds(container, stream) -> float:
    if container.duration:
        return container.duration / av.time_base
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return (stream.frames or 1) / FPS


def _reason(exc: BaseException) -> str:
    """The decoder's words without the file path (which is the worker's own business), cut short."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    text = re.sub(r"""\s*:?\s*['"]?/[^'"\s]*['"]?""", "", text.splitlines()[0]).strip()
    return text[:160] or type(exc).__name__


def make_soundtrack(paths: list[Path], mode: str, target: Path) -> Path:
    """The user's own voices as the video's sound: summed on one timeline (para) or one after another (add)."""
    tracks = [_decode_stereo(path) for path in paths]
    if mode == "add":
        mixed = np.concatenate(tracks)
    else:
        mixed = np.zeros((max(len(t) for t in tracks), 2), dtype=np.float32)
        for track in tracks:
            mixed[: len(track)] += track
    pcm = (np.clip(mixed, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(target), "wb") as sink:
        sink.setnchannels(2)
        sink.setsampwidth(2)
        sink.setframerate(SOUNDTRACK_RATE)
        sink.writeframes(pcm.tobytes())
    return target


def _decode_stereo(path: Path) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="stereo", rate=SOUNDTRACK_RATE)
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1, 2) for out in resampler.resample(frame)]
        chunks += [out.to_ndarray().reshape(-1, 2) for out in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.float32)


def make_speaker_masks(boxes, size: tuple[int, int], job_dir: Path) -> dict[str, Path]:
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
    mask.convert("RGB").save(path)
    return path


def rename_by_content(path: Path, slot: str) -> Path:
    """Give a fetched file the extension of what it is, for loaders that look at names."""
    suffix = _detected_suffix(path, slot_kind(slot))
    if path.suffix == suffix:
        return path
    renamed = path.with_suffix(suffix)
    path.rename(renamed)
    return renamed


def _detected_suffix(path: Path, kind: str) -> str:
    if kind == "image":
        with Image.open(path) as image:
            return "." + IMAGE_FORMATS.get(image.format or "", "png")
    with av.open(str(path)) as container:
        name = container.format.name.split(",")[0]
    return {"mov": ".mp4", "matroska": ".mkv", "wav": ".wav", "mp3": ".mp3", "ogg": ".ogg", "flac": ".flac"}.get(
        name, f".{name}"
    )

