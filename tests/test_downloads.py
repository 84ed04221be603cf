"""``*_url`` inputs: redirects, size cap, schemes and addresses (see test_hostile_inputs for the rest)."""

from __future__ import annotations

import http.server
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from infinitetalk_worker import downloads
from infinitetalk_worker.config import Settings
from infinitetalk_worker.downloads import check_public_url, download_url
from infinitetalk_worker.errors import InputError


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(job_root=tmp_path / "jobs", allow_private_urls=True)


class _Files(http.server.SimpleHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self):  # noqa: N802 (http.server API)
        status, headers, body = self.routes.get(self.path, (404, {}, b"missing"))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Files.routes
    server.shutdown()
    server.server_close()
    _Files.routes.clear()


def test_url_download_follows_redirects_and_streams_to_disk(settings, web, tmp_path):
    base, routes = web
    routes["/face.png"] = (200, {}, b"PNGDATA")
    routes["/go"] = (302, {"Location": "/face.png"}, b"")
    download_url("image_url", base + "/go", tmp_path / "x.bin", settings)
    assert (tmp_path / "x.bin").read_bytes() == b"PNGDATA"


def test_url_errors_name_the_field(settings, web, tmp_path):
    base, routes = web
    routes["/loop"] = (302, {"Location": "/loop"}, b"")
    routes["/big"] = (200, {}, b"x" * 5000)
    with pytest.raises(InputError, match="wav_url: .* answered HTTP 404"):
        download_url("wav_url", base + "/missing", tmp_path / "a", settings)
    with pytest.raises(InputError, match="wav_url: the URL redirected more than 5 times"):
        download_url("wav_url", base + "/loop", tmp_path / "b", settings)
    with pytest.raises(InputError, match="over the 1000-byte download limit"):
        download_url("wav_url", base + "/big", tmp_path / "c", replace(settings, max_download_bytes=1000))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.wav", "gopher://x/"])
def test_non_http_urls_are_refused(settings, tmp_path, url):
    with pytest.raises(InputError, match="only http and https"):
        download_url("wav_url", url, tmp_path / "a", settings)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/a.wav", "http://localhost/a.wav", "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/a.wav", "http://[::1]/a.wav", "http://192.168.1.1/x"]
)
def test_private_and_loopback_targets_are_refused_by_default(settings, tmp_path, url):
    strict = replace(settings, allow_private_urls=False)
    with pytest.raises(InputError, match="non-public address"):
        download_url("image_url", url, tmp_path / "a", strict)


def test_redirect_to_a_private_address_is_refused(settings, web, tmp_path, monkeypatch):
    base, routes = web
    routes["/hop"] = (302, {"Location": "http://169.254.169.254/latest/meta-data"}, b"")
    calls = []
    real_check = downloads.check_public_url

    def first_hop_trusted(key, url, settings_):
        calls.append(url)
        return real_check(key, url, settings_ if len(calls) > 1 else settings)

    monkeypatch.setattr(downloads, "check_public_url", first_hop_trusted)
    with pytest.raises(InputError, match="169.254.169.254"):
        download_url("image_url", base + "/hop", tmp_path / "a", replace(settings, allow_private_urls=False))
    assert calls[-1].startswith("http://169.254.169.254")


def test_every_address_of_a_host_is_checked_and_returned_for_pinning(settings, monkeypatch):
    answers = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1", 80, 0, 0)),
               (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    strict = replace(settings, allow_private_urls=False)
    assert check_public_url("wav_url", "http://media.example.test/a.wav", strict) == ["2606:4700::1", "93.184.215.14"]


def test_a_port_that_is_not_a_port_is_named(settings):
    with pytest.raises(InputError, match="^wav_url: the URL's port is not a number from 0 to 65535"):
        check_public_url("wav_url", "http://example.com:99999/a.wav", settings)


def test_the_next_checked_address_is_tried_when_the_first_cannot_be_reached(settings, web, tmp_path, monkeypatch):
    """A name whose first address the pod cannot route (often IPv6) still downloads from the next one."""
    base, routes = web
    routes["/voice.wav"] = (200, {}, b"voice")
    port = int(base.rsplit(":", 1)[1])
    monkeypatch.setattr(downloads, "check_public_url", lambda key, url, settings_: ["127.0.0.2", "127.0.0.1"])
    # nothing listens on 127.0.0.2: the test server is bound to 127.0.0.1 only
    download_url("wav_url", f"http://media.example.test:{port}/voice.wav", tmp_path / "v.bin", settings)
    assert (tmp_path / "v.bin").read_bytes() == b"voice"
