"""Hostile and broken job inputs, through the real handler against the fake ComfyUI (issue 5, part 1).

Each case must end within a bound with an ``error`` that starts with the offending field's name,
leave no file behind outside the job directory (which itself is gone afterwards), submit nothing
to ComfyUI, and leave the worker able to run the next valid job. ``hostile()`` checks all of that
for every case, so each test only states the input and the field it expects to be named.

Only loopback servers are started. Cases about where a URL may point use a test resolver
(``resolve_as``) for made-up host names and ``trust_first_hop`` to let the first hop of a redirect
chain reach the loopback test server while every later hop is judged by the real check.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import os
import re
import socket
import struct
import tempfile
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import urllib3.util.connection

import handler as handler_module
from infinitetalk_worker import base64_input, downloads
from infinitetalk_worker.config import REPO_ROOT, Settings
from testsupport.fake_comfyui import FakeComfyUI
from testsupport.media_factory import make_encoded_audio, make_image, make_video, make_wav

SMOKE = REPO_ROOT / "workflows" / "smoke"
EXAMPLES = REPO_ROOT / "examples"
QUICK_S = 5.0  # bound for every case that involves no waiting on a network timeout
PUBLIC_IP = "93.184.215.14"  # a global address; never contacted (see resolve_as)


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Media made once for the module, plus the odd files the path cases point at."""
    base = tmp_path_factory.mktemp("hostile")
    folder = base / "inputs"
    folder.mkdir()
    make_image(folder / "face.png", (160, 120))
    make_wav(folder / "voice.wav", 1.0)
    make_wav(folder / "voice2.wav", 1.0, frequency=330)
    make_wav(folder / "long.wav", 3.0)
    make_video(folder / "clip.mp4", 1.0, (96, 64))
    make_video(folder / "long.mp4", 3.0, (64, 48))
    make_hour_of_silence(folder / "hour.flac")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.png").write_text("just text, named like an image")
    make_wav(folder / "voice.wav]", 1.0)
    make_wav(base / "secret.wav", 1.0)
    (folder / "link.wav").symlink_to(base / "secret.wav")
    (base / "inputs-evil").mkdir()
    make_wav(base / "inputs-evil" / "voice.wav", 1.0)
    return folder


def make_hour_of_silence(path: Path) -> None:
    """An hour of 8 kHz silence: about 100 kB as FLAC, a million frames to decode."""
    zero = np.zeros((1, 8000), dtype=np.int16)
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=8000, layout="mono")
        for second in range(3600):
            frame = av.AudioFrame.from_ndarray(zero, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 8000, second * 8000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeComfyUI]:
    """One fake ComfyUI for the module: hostile inputs never change its scenario."""
    with FakeComfyUI(tmp_path_factory.mktemp("hostile-comfyui")) as server:
        yield server


@pytest.fixture
def settings(comfy: FakeComfyUI, tmp_path: Path, inputs: Path) -> Settings:
    volume, job_root = tmp_path / "volume", tmp_path / "jobs"
    volume.mkdir()
    job_root.mkdir()
    return Settings(
        comfyui_url=comfy.url, workflow_dir=SMOKE, job_root=job_root, volume_root=volume,
        allowed_input_roots=[inputs], http_timeout_s=5, ws_idle_timeout_s=1, job_deadline_s=30,
        progress_interval_s=0.0, comfyui_dir=comfy.root, download_connect_timeout_s=1.0,
        download_read_timeout_s=1.0, download_total_timeout_s=3.0,
    )


@pytest.fixture(autouse=True)
def worker(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setattr("infinitetalk_worker.progress._runpod_sender", lambda job, payload: None)
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))  # library temp files land where we look
    handler_module.reset_worker(settings)
    yield
    handler_module.reset_worker(None)


def use(settings: Settings, **changes: Any) -> Settings:
    """Switch the worker to changed settings for the rest of the test."""
    changed = replace(settings, **changes)
    handler_module.reset_worker(changed)
    return changed


def run(job_input: Any, job_id: str = "hostile") -> dict:
    return asyncio.run(handler_module.handler({"id": job_id, "input": job_input}))


def valid_input(inputs: Path) -> dict:
    return {"image_path": str(inputs / "face.png"), "wav_path": str(inputs / "voice.wav"), "width": 128,
            "height": 128, "max_frame": 5}


def snapshot(*roots: Path) -> dict[str, int]:
    """Every file and directory under the roots, with file sizes: what a job may not change."""
    seen: dict[str, int] = {}
    for root in roots:
        for folder, _dirs, files in os.walk(root):
            seen[folder] = -1
            for name in files:
                path = os.path.join(folder, name)
                seen[path] = os.lstat(path).st_size
    return seen


@pytest.fixture
def hostile(settings: Settings, comfy: FakeComfyUI, inputs: Path, tmp_path: Path) -> Callable[..., str]:
    """Run one hostile input and check every promise; returns the error text for extra checks."""

    def check(job_input: Any, field: str, within: float = QUICK_S) -> str:
        watched = (tmp_path, inputs.parent, comfy.root, EXAMPLES, SMOKE)
        before, prompts_before = snapshot(*watched), len(comfy.prompts)
        started = time.monotonic()
        result = run(job_input)
        elapsed = time.monotonic() - started
        assert set(result) == {"error"}, result
        assert re.match(rf"{re.escape(field)}[.:]", result["error"]), result["error"]
        assert elapsed < within, f"took {elapsed:.1f} s, bound {within} s"
        job_root = handler_module.get_worker().settings.job_root
        assert list(job_root.iterdir()) == [], "the job directory must be removed"
        after = snapshot(*watched)
        assert after == before, f"files changed outside the job directory: {set(after) ^ set(before)}"
        assert len(comfy.prompts) == prompts_before, "a refused request must not reach ComfyUI"
        following = run(valid_input(inputs), job_id="after-hostile")
        assert "error" not in following, following["error"]
        assert following["frames"] == 5
        return result["error"]

    return check


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def media_bytes(inputs: Path, name: str) -> bytes:
    return (inputs / name).read_bytes()


# -- a loopback web server with misbehaving routes -------------------------------------------------


class _Routes(http.server.BaseHTTPRequestHandler):
    """GET behaviours by path: ``(kind, argument)``; every request path is recorded."""

    protocol_version = "HTTP/1.1"
    routes: dict[str, tuple[str, Any]] = {}
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.seen.append(self.path)
        kind, argument = self.routes.get(self.path, ("status", 404))
        getattr(self, f"_{kind}")(argument)

    def _body(self, body: bytes, headers: dict[str, str] | None = None, status: int = 200) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _file(self, body: bytes) -> None:
        self._body(body)

    def _status(self, code: int) -> None:
        self._body(b"<html>nope</html>", {"Content-Type": "text/html"}, code)

    def _redirect(self, location: str) -> None:
        self._body(b"", {"Location": location}, 302)

    def _declared(self, size: int) -> None:
        """Headers announce a big body; only a little is sent."""
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        self.wfile.write(b"\0" * 100)

    def _undeclared(self, size: int) -> None:
        """No Content-Length: the body ends when the connection closes."""
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        for _ in range(size // 10_000):
            self.wfile.write(b"\0" * 10_000)

    def _gzip_bomb(self, size: int) -> None:
        """A small gzip body that inflates to ``size`` bytes of zeros."""
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        body = b"".join(packer.compress(b"\0" * 1_000_000) for _ in range(size // 1_000_000)) + packer.flush()
        self._body(body, {"Content-Encoding": "gzip"})

    def _silent(self, seconds: float) -> None:
        """Accept the request, then say nothing."""
        time.sleep(seconds)
        self.close_connection = True

    def _trickle(self, seconds: float) -> None:
        """One byte every 0.1 s: never idle long enough for a read timeout, never finished."""
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        ends = time.monotonic() + seconds
        try:
            while time.monotonic() < ends:
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def _trickle_headers(self, seconds: float) -> None:
        """The status line, then a header that never ends, one byte every 0.1 s."""
        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
        ends = time.monotonic() + seconds
        try:
            while time.monotonic() < ends:
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass
        self.close_connection = True

    def _slow_redirect(self, argument: tuple[float, str]) -> None:
        """Answer just inside the read timeout, with a redirect to the next slow hop."""
        delay, location = argument
        time.sleep(delay)
        self._redirect(location)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[tuple[str, dict, list]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Routes)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Routes.routes, _Routes.seen
    server.shutdown()
    server.server_close()
    _Routes.routes.clear()
    _Routes.seen.clear()


@pytest.fixture
def resolve_as(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A test resolver: made-up host names answer with the addresses listed here, in turn."""
    table: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if host not in table:
            return real(host, port, *args, **kwargs)
        address = table[host][0] if len(table[host]) == 1 else table[host].pop(0)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sockaddr = (address, port or 0, 0, 0) if family == socket.AF_INET6 else (address, port or 0)
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture
def trust_first_hop(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Let exactly one URL through the address check (the loopback test server standing in for a
    public host); every other URL, including every redirect target, meets the real check."""
    real_check = downloads.check_public_url

    def install(trusted_url: str) -> None:
        def check(key: str, url: str, settings: Settings):
            lenient = replace(settings, allow_private_urls=True) if url == trusted_url else settings
            return real_check(key, url, lenient)

        monkeypatch.setattr(downloads, "check_public_url", check)

    return install


# -- invalid Base64 and data URIs ------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "this is not base64!!",
    "QUJD=QUJD",            # padding in the middle
    "A",                    # a length no Base64 text can have
    "====",
    "QUJD\x00QUJD",
    "😀😀😀😀",
])
def test_invalid_base64_names_the_field(hostile, inputs, value):
    error = hostile({"image_path": str(inputs / "face.png"), "wav_base64": value}, "wav_base64")
    assert "not valid Base64" in error


@pytest.mark.parametrize("field,mime,source", [
    ("image_base64", "audio/wav", "voice.wav"),
    ("image_base64", "video/mp4", "clip.mp4"),
    ("wav_base64", "image/png", "face.png"),
    ("wav_base64", "text/html", "voice.wav"),
    ("video_base64", "audio/wav", "clip.mp4"),
])
def test_data_uri_whose_type_contradicts_the_field(hostile, inputs, field, mime, source):
    job = {"input_type": "video" if field.startswith("video") else "image", "image_path": str(inputs / "face.png"),
           "video_path": str(inputs / "clip.mp4"), "wav_path": str(inputs / "voice.wav")}
    slot = {"image_base64": "image_path", "wav_base64": "wav_path", "video_base64": "video_path"}[field]
    job.pop(slot)
    job[field] = f"data:{mime};base64,{b64(media_bytes(inputs, source))}"
    error = hostile(job, field)
    assert f"the data URI says '{mime}'" in error


def test_data_uri_without_base64_marker(hostile, inputs):
    error = hostile({"image_base64": "data:image/png,iVBORw0KGgo=", "wav_path": str(inputs / "voice.wav")},
                    "image_base64")
    assert "without ';base64,'" in error


@pytest.mark.parametrize("form", ["wrapped at 76 columns", "URL-safe without padding"])
def test_large_base64_in_any_accepted_form_is_decoded_without_copying_it_whole(tmp_path, form):
    """Line breaks (the `base64` tool's output), the URL-safe alphabet and missing padding are
    accepted; cleaning them up must work chunk by chunk, with memory bounded by the chunk size, not
    copy the input whole (or, for line breaks, as one string per line): for a 200 MB input that
    would cost several hundred MB at once."""
    data = NOISE * 900  # 18 MB: 24 MB of Base64, well over the bound below
    text = base64.b64encode(data).decode()
    if form.startswith("wrapped"):
        text = "\n".join(text[i : i + 76] for i in range(0, len(text), 76))
    else:
        text = text.translate(str.maketrans("+/", "-_")).rstrip("=")
    settings = Settings(max_base64_bytes=len(text) + 1)
    tracemalloc.start()
    try:
        base64_input.decode_base64("wav_base64", text, "audio", tmp_path / "audio.bin", settings)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "audio.bin").read_bytes() == data
    bound = 4 * base64_input.BASE64_CHUNK_CHARS
    assert peak < bound, f"decoding {len(text) / 1e6:.0f} MB of Base64 took {peak / 1e6:.0f} MB at its peak"


def test_base64_over_the_size_limit_is_refused_before_decoding(hostile, inputs, settings):
    use(settings, max_base64_bytes=1000)
    error = hostile({"image_path": str(inputs / "face.png"), "wav_base64": b64(media_bytes(inputs, "voice.wav"))},
                    "wav_base64")
    assert "over the 1000-character limit" in error


# -- bytes that are not what the field says --------------------------------------------------------


NOISE = bytes((i * 7919 + 13) % 251 for i in range(20_000))


@pytest.mark.parametrize("field,payload", [
    ("image_base64", NOISE),
    ("image_base64", b"%PDF-1.4\n" + NOISE),
    ("image_base64", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>'),
    ("image_base64", "voice.wav"),
    ("image_base64", "clip.mp4"),
    ("wav_base64", NOISE),
    ("wav_base64", b"hello, I am a text file " * 200),
    ("wav_base64", "face.png"),
    ("video_base64", NOISE),
    ("video_base64", "face.png"),
    ("video_base64", "voice.wav"),
])
def test_bytes_that_are_not_the_fields_kind(hostile, inputs, field, payload):
    data = media_bytes(inputs, payload) if isinstance(payload, str) else payload
    job = {"input_type": "video" if field == "video_base64" else "image", "image_path": str(inputs / "face.png"),
           "video_path": str(inputs / "clip.mp4"), "wav_path": str(inputs / "voice.wav")}
    job.pop(field.replace("_base64", "_path"))
    job[field] = b64(data)
    error = hostile(job, field)
    assert "not" in error  # "not a readable image", "not audio", "not a video", ...


def test_a_video_with_only_sound_is_not_a_video(hostile, inputs, tmp_path):
    sound_only = make_encoded_audio(tmp_path / "sound.m4a", 1.0, "aac", "ipod")
    job = {"input_type": "video", "video_base64": b64(sound_only.read_bytes()), "wav_path": str(inputs / "voice.wav")}
    hostile(job, "video_base64")


def test_a_silent_video_is_not_audio(hostile, inputs):
    error = hostile({"image_path": str(inputs / "face.png"), "wav_base64": b64(media_bytes(inputs, "clip.mp4"))},
                    "wav_base64")
    assert "no audio track" in error


# -- empty and truncated files ---------------------------------------------------------------------


def test_empty_file_on_a_path(hostile, inputs):
    assert "is empty" in hostile({"image_path": str(inputs / "face.png"), "wav_path": str(inputs / "empty.wav")},
                                 "wav_path")


@pytest.mark.parametrize("value", ["", "   ", "data:image/png;base64,"])
def test_empty_base64_is_missing_or_empty(hostile, inputs, value):
    field = "image_base64" if value.startswith("data") else "image_path"  # blank counts as absent
    error = hostile({"image_base64": value, "wav_path": str(inputs / "voice.wav")}, field)
    assert "is empty" in error or "is required" in error


@pytest.mark.parametrize("field,name,keep", [
    ("image_base64", "face.png", 0.5),
    ("image_base64", "face.png", 0.05),
    ("video_base64", "clip.mp4", 0.5),
    ("wav_base64", "voice.wav", 44 / 32044),   # the header and no samples
    ("wav_base64", "voice.wav", 30 / 32044),   # not even a whole header
])
def test_truncated_files(hostile, inputs, field, name, keep):
    data = media_bytes(inputs, name)
    job = {"input_type": "video" if field == "video_base64" else "image", "image_path": str(inputs / "face.png"),
           "video_path": str(inputs / "clip.mp4"), "wav_path": str(inputs / "voice.wav")}
    job.pop(field.replace("_base64", "_path"))
    job[field] = b64(data[: max(1, int(len(data) * keep))])
    assert "file is truncated" in hostile(job, field)


def test_a_base64_wav_cut_to_200_characters(hostile, inputs):
    """Its header promises a second of samples; the 3 ms it holds once made a one-frame video."""
    cut = b64(media_bytes(inputs, "voice.wav"))[:200]
    error = hostile({"image_path": str(inputs / "face.png"), "wav_base64": cut}, "wav_base64")
    assert "the audio file is truncated: its header promises 32044 bytes but it holds 150" in error


@pytest.mark.parametrize("codec,container", [("aac", "ipod"), ("libmp3lame", "mp3")])
def test_truncated_compressed_audio(hostile, inputs, tmp_path, codec, container):
    encoded = make_encoded_audio(tmp_path / f"voice.{container}", 1.0, codec, container).read_bytes()
    error = hostile({"image_path": str(inputs / "face.png"), "wav_base64": b64(encoded[: len(encoded) // 2])},
                    "wav_base64")
    assert "the audio file is truncated" in error


def test_audio_shorter_than_the_minimum(hostile, inputs, tmp_path):
    blip = make_wav(tmp_path / "blip.wav", 0.1).read_bytes()
    error = hostile({**valid_input(inputs), "wav_path": None, "wav_base64": b64(blip)}, "wav_base64")
    assert "the audio is 0.100 s long; at least 0.2 s" in error


# -- decompression bombs and over-long media -------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels and carries almost no data: a bomb by its header."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width,height", [(100_000, 100_000), (8000, 6000), (40_000_001, 1)])
def test_image_over_the_pixel_limit_at_default_settings(hostile, inputs, width, height):
    """Refused from the header alone: nothing near width x height pixels is ever allocated."""
    error = hostile({"image_base64": b64(png_header_only(width, height)), "wav_path": str(inputs / "voice.wav")},
                    "image_base64")
    assert "over the limit of 40000000 pixels" in error


def test_real_image_over_a_configured_pixel_limit(hostile, inputs, settings, tmp_path):
    use(settings, max_image_pixels=20_000)  # the valid job's portrait has 19200
    big = make_image(tmp_path / "big.png", (200, 150))
    assert "the image is 200x150 pixels, over the limit of 20000 pixels" in hostile(
        {"image_base64": b64(big.read_bytes()), "wav_path": str(inputs / "voice.wav")}, "image_base64")


def test_audio_longer_than_the_configured_maximum(hostile, inputs, settings):
    use(settings, max_audio_seconds=2)
    error = hostile({**valid_input(inputs), "wav_path": str(inputs / "long.wav")}, "wav_path")
    assert "longer than the 2-second limit" in error


def test_audio_limit_names_the_second_speaker(hostile, inputs, settings):
    use(settings, max_audio_seconds=2.0)
    error = hostile({**valid_input(inputs), "person_count": "multi", "wav_path_2": str(inputs / "long.wav")},
                    "wav_path_2")
    assert "longer than the 2-second limit" in error


def test_compressed_audio_is_cut_off_at_the_limit_not_decoded_whole(hostile, inputs, settings):
    """An hour of silence is small as FLAC; decoding stops at the limit, so the refusal is quick."""
    use(settings, max_audio_seconds=600)
    assert "longer than the 600-second limit" in hostile(
        {"image_path": str(inputs / "face.png"), "wav_path": str(inputs / "hour.flac")}, "wav_path", within=3.0)


def test_video_longer_than_the_configured_maximum(hostile, inputs, settings):
    use(settings, max_video_seconds=2)
    job = {"input_type": "video", "video_path": str(inputs / "long.mp4"), "wav_path": str(inputs / "voice.wav")}
    error = hostile(job, "video_path")
    assert "over the 2-second limit" in error


# -- URLs ------------------------------------------------------------------------------------------


@pytest.fixture
def private_ok(settings: Settings) -> Settings:
    """Loopback downloads allowed: for the cases about the server's behaviour, not its address."""
    return use(settings, allow_private_urls=True, max_download_bytes=100_000)


def url_job(inputs: Path, url: str) -> dict:
    return {"image_path": str(inputs / "face.png"), "wav_url": url}


def test_url_answering_404(hostile, web, inputs, private_ok):
    base, routes, _ = web
    assert "answered HTTP 404" in hostile(url_job(inputs, base + "/missing.wav"), "wav_url")


def test_url_answering_500_with_an_html_page(hostile, web, inputs, private_ok):
    base, routes, _ = web
    routes["/broken.wav"] = ("status", 500)
    assert "answered HTTP 500" in hostile(url_job(inputs, base + "/broken.wav"), "wav_url")


def test_url_redirecting_in_a_loop(hostile, web, inputs, private_ok):
    base, routes, seen = web
    routes["/a"], routes["/b"] = ("redirect", "/b"), ("redirect", base + "/a")
    assert "redirected more than 5 times" in hostile(url_job(inputs, base + "/a"), "wav_url")
    assert len(seen) == 6


def test_url_redirect_without_a_location(hostile, web, inputs, private_ok):
    base, routes, _ = web
    routes["/nowhere"] = ("redirect", "")
    hostile(url_job(inputs, base + "/nowhere"), "wav_url")


def test_url_that_never_answers_times_out(hostile, web, inputs, private_ok):
    base, routes, _ = web
    routes["/silent.wav"] = ("silent", 5.0)
    error = hostile(url_job(inputs, base + "/silent.wav"), "wav_url", within=private_ok.download_read_timeout_s + 2)
    assert "timed out" in error


def test_url_that_trickles_bytes_ends_at_the_total_download_timeout(hostile, web, inputs, private_ok):
    """One byte every 0.1 s never trips the read timeout; DOWNLOAD_TOTAL_TIMEOUT_S must still end it."""
    base, routes, _ = web
    routes["/slow.wav"] = ("trickle", 8.0)
    hostile(url_job(inputs, base + "/slow.wav"), "wav_url", within=private_ok.download_total_timeout_s + 1)


def test_url_whose_headers_never_end_is_bounded_by_the_total_timeout(hostile, web, inputs, private_ok):
    base, routes, _ = web
    routes["/headers.wav"] = ("trickle_headers", 8.0)
    hostile(url_job(inputs, base + "/headers.wav"), "wav_url", within=private_ok.download_total_timeout_s + 1)


def test_redirect_chain_of_slow_hops_is_bounded_by_the_total_timeout(hostile, web, inputs, private_ok):
    """Every hop answers within the read timeout; together they must not outlast the total."""
    base, routes, _ = web
    for hop in range(5):
        routes[f"/hop{hop}"] = ("slow_redirect", (0.9, f"/hop{hop + 1}"))
    routes["/hop5"] = ("file", media_bytes(inputs, "voice.wav"))
    hostile(url_job(inputs, base + "/hop0"), "wav_url", within=private_ok.download_total_timeout_s + 1)


def test_url_declaring_a_size_over_the_cap(hostile, web, inputs, private_ok):
    base, routes, _ = web
    routes["/huge.wav"] = ("declared", 10_000_000_000)
    assert "over the 100000-byte download limit" in hostile(url_job(inputs, base + "/huge.wav"), "wav_url")


def test_url_streaming_past_the_cap_without_declaring_a_size(hostile, web, inputs, private_ok):
    base, routes, _ = web
    routes["/endless.wav"] = ("undeclared", 5_000_000)
    assert "larger than the 100000-byte download limit" in hostile(url_job(inputs, base + "/endless.wav"), "wav_url")


def test_url_gzip_bomb_is_capped_on_the_inflated_size(hostile, web, inputs, private_ok):
    base, routes, _ = web
    routes["/bomb.wav"] = ("gzip_bomb", 50_000_000)
    assert "100000-byte download limit" in hostile(url_job(inputs, base + "/bomb.wav"), "wav_url")


def test_url_with_an_empty_body(hostile, web, inputs, private_ok):
    base, routes, _ = web
    routes["/empty.wav"] = ("file", b"")
    assert "is empty" in hostile(url_job(inputs, base + "/empty.wav"), "wav_url")


def test_url_serving_an_html_page_instead_of_audio(hostile, web, inputs, private_ok):
    base, routes, _ = web
    routes["/login"] = ("file", b"<!doctype html><html><body>Please log in</body></html>" * 20)
    assert "not readable audio" in hostile(url_job(inputs, base + "/login"), "wav_url")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/a.wav",
    "http://127.1/a.wav",
    "http://2130706433/a.wav",              # 127.0.0.1 written as one number
    "http://0.0.0.0/a.wav",
    "http://[::1]/a.wav",
    "http://[::ffff:127.0.0.1]/a.wav",
    "http://localhost/a.wav",
    "http://10.1.2.3/a.wav",
    "http://172.16.0.1/a.wav",
    "http://192.168.1.1/a.wav",
    "http://100.64.0.1/a.wav",              # carrier-grade NAT
    "http://169.254.169.254/latest/meta-data/iam/",
    "http://[fe80::1]/a.wav",
    "http://user:pw@127.0.0.1:80/a.wav",
])
def test_url_pointing_at_a_non_public_address(hostile, inputs, url):
    assert "non-public address" in hostile(url_job(inputs, url), "wav_url")


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.com/a.wav", "gopher://example.com/", "javascript:alert(1)",
    "//example.com/a.wav", "/etc/passwd", "data:audio/wav;base64,UklGRg==", "http:///a.wav",
])
def test_url_that_is_not_http_or_has_no_host(hostile, inputs, url):
    error = hostile(url_job(inputs, url), "wav_url")
    assert "only http and https" in error or "no host" in error


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.8", "169.254.169.254", "::1", "fd00::5"])
def test_host_name_that_resolves_to_a_non_public_address(hostile, inputs, resolve_as, address):
    resolve_as["media.example.test"] = [address]
    error = hostile(url_job(inputs, "http://media.example.test/a.wav"), "wav_url")
    assert f"resolves to {address}" in error


def test_host_name_with_one_public_and_one_private_address(hostile, inputs, resolve_as, monkeypatch):
    """Any private answer refuses the host: a client may not pick which address gets used."""
    real = socket.getaddrinfo

    def two_answers(host, port, *args, **kwargs):
        if host == "mixed.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_IP, port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.9", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    assert "10.0.0.9" in hostile(url_job(inputs, "http://mixed.example.test/a.wav"), "wav_url")


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:9/a.wav",
    "http://localhost/a.wav",
    "http://[::1]/a.wav",
    "http://internal.example.test/a.wav",
    "file:///etc/passwd",
])
def test_redirect_to_a_non_public_or_non_http_target(hostile, web, inputs, resolve_as, trust_first_hop, target):
    base, routes, seen = web
    resolve_as["internal.example.test"] = ["10.20.30.40"]
    routes["/hop.wav"] = ("redirect", target)
    trust_first_hop(base + "/hop.wav")
    error = hostile(url_job(inputs, base + "/hop.wav"), "wav_url")
    assert "non-public address" in error or "only http and https" in error
    assert seen == ["/hop.wav"]


def test_host_name_that_changes_its_answer_after_the_check(hostile, web, inputs, resolve_as, monkeypatch):
    """DNS rebinding: the name passes the check as a public address, then resolves to loopback when
    the download connects. The worker must connect only to the address it checked."""
    base, routes, seen = web
    port = base.rsplit(":", 1)[1]
    routes["/voice.wav"] = ("file", media_bytes(inputs, "voice.wav"))
    resolve_as["rebind.example.test"] = [PUBLIC_IP, "127.0.0.1"]
    dialled = []

    real_connect = urllib3.util.connection.create_connection

    def no_outside_traffic(address, *args, **kwargs):  # the test itself never leaves loopback
        if address[0] in ("127.0.0.1", "localhost"):
            return real_connect(address, *args, **kwargs)
        dialled.append(address[0])
        raise ConnectionRefusedError(f"test: no connection to {address[0]}")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", no_outside_traffic)
    hostile(url_job(inputs, f"http://rebind.example.test:{port}/voice.wav"), "wav_url")
    assert dialled == [PUBLIC_IP], "the download must dial the address that was checked, nothing else"
    assert seen == [], "the loopback server must never receive the request"


# -- *_path values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "/etc/passwd",
    "/proc/self/environ",
    str(REPO_ROOT / "handler.py"),
    "handler.py",
    "../etc/passwd",
    "examples/../handler.py",
    "INPUTS/../secret.wav",
    "INPUTS/./../inputs/voice.wav",
    "INPUTS-evil/voice.wav",              # a sibling whose name starts like the root
    "INPUTS",                             # the root itself is not a file
    "INPUTS/missing.wav",
    "INPUTS/link.wav",                    # a symlink out of the root
    "INPUTS/voice.wav]",
])
def test_path_outside_the_allowed_roots_or_not_a_file(hostile, inputs, value):
    value = value.replace("INPUTS", str(inputs))
    hostile({"image_path": str(inputs / "face.png"), "wav_path": value}, "wav_path")


def test_default_roots_are_the_volume_and_the_examples(hostile, inputs, settings, tmp_path):
    """With ALLOWED_INPUT_ROOTS unset, the examples and the volume serve, anything else is refused."""
    use(settings, allowed_input_roots=[])
    make_wav(settings.volume_root / "voice.wav", 1.0)
    ok = run({"image_path": "examples/portrait.png", "wav_path": str(settings.volume_root / "voice.wav"),
              "width": 128, "height": 128, "max_frame": 3})
    assert "error" not in ok, ok.get("error")
    (settings.volume_root / "voice.wav").unlink()
    hostile_error = run({"image_path": "examples/portrait.png", "wav_path": str(inputs / "voice.wav")})
    assert hostile_error["error"].startswith("wav_path: ") and "outside the directories" in hostile_error["error"]


def test_configured_roots_replace_the_defaults(hostile, inputs):
    """ALLOWED_INPUT_ROOTS set to one folder: even the examples are outside."""
    error = hostile({"image_path": str(EXAMPLES / "portrait.png"), "wav_path": str(inputs / "voice.wav")},
                    "image_path")
    assert "outside the directories" in error


def test_a_file_inside_a_root_that_is_not_media(hostile, inputs):
    assert "not a readable image" in hostile(
        {"image_path": str(inputs / "notes.png"), "wav_path": str(inputs / "voice.wav")}, "image_path")


# -- request shape: two sources, wrong types, ranges, unknown keys, prompt ---------------------------


@pytest.mark.parametrize("extra,field", [
    ({"image_base64": "QUJD"}, "image_path"),
    ({"image_url": "http://example.com/a.png"}, "image_path"),
    ({"wav_url": "http://example.com/a.wav"}, "wav_path"),
])
def test_two_sources_for_one_slot(hostile, inputs, extra, field):
    assert "give exactly one of" in hostile({**valid_input(inputs), **extra}, field)


@pytest.mark.parametrize("field,value", [
    ("input_type", "gif"), ("input_type", 1), ("person_count", "three"), ("person_count", None),
    ("width", "abc"), ("width", 10), ("width", 100_000), ("width", 1e300), ("width", 512.5), ("height", True),
    ("height", [512]), ("max_frame", 0), ("max_frame", -5), ("max_frame", 10**9), ("seed", -1), ("seed", 2**70),
    ("seed", "lucky"), ("force_offload", "yes"), ("force_offload", 1), ("network_volume", "maybe"),
    ("cfg", "nan"), ("cfg", "inf"), ("cfg", -1), ("shift", 1e9), ("audio_scale", "loud"), ("steps", 0),
    ("steps", 1000), ("prompt", ["a", "b"]), ("prompt", None), ("prompt", {"text": "hi"}), ("negative_prompt", 5),
    ("image_path", 5), ("wav_path", ["a.wav"]), ("wav_base64", {"data": "x"}), ("multi_audio_type", "mix"),
    ("output", "ftp"), ("speaker_boxes", "left"), ("speaker_boxes", [[0, 0, 1]]),
    ("speaker_boxes", [[0, 0, 2, 1], [0, 0, 1, 1]]), ("speaker_boxes", [[0.5, 0, 0.2, 1], [0, 0, 1, 1]]),
])
def test_wrong_types_and_out_of_range_values(hostile, inputs, field, value):
    job = valid_input(inputs)
    if field == "speaker_boxes":
        job.update(person_count="multi", wav_path_2=str(inputs / "voice2.wav"))
    job[field] = value
    hostile(job, field)


@pytest.mark.parametrize("job_input", [None, [], ["image_path"], "image_path=x", 42, True])
def test_input_that_is_not_an_object(hostile, job_input):
    assert "must be a JSON object" in hostile(job_input, "input")


def test_unknown_keys_are_accepted_and_listed_back_as_warnings(inputs):
    result = run({**valid_input(inputs), "imagepath": "/typo.png", "guidance": 7, "__proto__": {"x": 1}})
    assert "error" not in result, result.get("error")
    assert result["warnings"] == ["Unknown key '__proto__' was ignored.", "Unknown key 'guidance' was ignored.",
                                  "Unknown key 'imagepath' was ignored; did you mean image_path?"]


def test_over_long_prompt(hostile, inputs):
    assert "is 2001 characters long; the limit is 2000" in hostile({**valid_input(inputs), "prompt": "x" * 2001},
                                                                   "prompt")


def test_ten_megabyte_prompt_is_refused_quickly(hostile, inputs):
    hostile({**valid_input(inputs), "prompt": "word " * 2_000_000, "negative_prompt": "ok"}, "prompt", within=2.0)


def test_over_long_negative_prompt(hostile, inputs):
    hostile({**valid_input(inputs), "negative_prompt": "y" * 2001}, "negative_prompt")


# -- what an error may say --------------------------------------------------------------------------


@pytest.mark.parametrize("field,value", [("input_type", "A" * 1_000_000), ("cfg", "1" * 1_000_000),
                                         ("width", "9" * 5000), ("width", 1e300)])
def test_an_error_never_echoes_a_huge_value(hostile, inputs, field, value):
    """The error is logged and returned to the client: a megabyte value must not come back in it."""
    error = hostile({**valid_input(inputs), field: value}, field)
    assert len(error) < 500, f"error of {len(error)} characters"
    assert "sys.set_int_max_str_digits" not in error


def test_warnings_stay_small_whatever_the_unknown_keys(inputs):
    """Many or huge unknown keys are reported, but the result must not grow with them."""
    result = run({**valid_input(inputs), "k" * 100_000: 1, **{f"extra_{i}": i for i in range(5000)}})
    assert "error" not in result, result.get("error")
    assert 0 < len(result["warnings"]) <= 50
    assert sum(len(w) for w in result["warnings"]) < 10_000


def test_errors_do_not_reveal_the_workers_own_file_paths(hostile, inputs, settings):
    """A broken upload is reported by its field, not by the job directory it was copied to."""
    error = hostile({"image_path": str(inputs / "face.png"), "wav_base64": b64(NOISE)}, "wav_base64")
    assert str(settings.job_root) not in error
