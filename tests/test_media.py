"""Media inputs: every source kind, content sniffing from bytes, probing, limits, and derived files."""

from __future__ import annotations

import base64
import http.server
import threading
import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infinitetalk_worker.config import Settings
from infinitetalk_worker.errors import InputError
from infinitetalk_worker.media import (
    check_image,
    decode_base64,
    download_url,
    job_directory,
    make_soundtrack,
    make_speaker_masks,
    prepare_media,
    probe_audio,
    probe_video,
    resolve_input_path,
)
from infinitetalk_worker.request import parse_request
from testsupport.media_factory import make_encoded_audio, make_image, make_video, make_wav


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    return Settings(job_root=tmp_path / "jobs", allowed_input_roots=[inputs], allow_private_urls=True)


@pytest.fixture
def inputs(settings: Settings) -> Path:
    return settings.allowed_input_roots[0]


def test_path_inside_allowed_root_is_used_in_place(settings, inputs):
    image = make_image(inputs / "face.png")
    assert resolve_input_path("image_path", str(image), settings) == image.resolve()


@pytest.mark.parametrize("value", ["/etc/passwd", "../inputs/face.png", "inputs/../../etc/passwd"])
def test_path_outside_roots_or_with_dotdot_is_refused(settings, inputs, value):
    make_image(inputs / "face.png")
    with pytest.raises(InputError, match="^image_path: "):
        resolve_input_path("image_path", value, settings)


def test_symlink_leading_out_of_the_root_is_refused(settings, inputs, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    (inputs / "link.png").symlink_to(secret)
    with pytest.raises(InputError, match="outside the directories"):
        resolve_input_path("image_path", str(inputs / "link.png"), settings)


def test_missing_and_empty_files_are_named(settings, inputs):
    with pytest.raises(InputError, match="does not exist"):
        resolve_input_path("wav_path", str(inputs / "nope.wav"), settings)
    (inputs / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        resolve_input_path("wav_path", str(inputs / "empty.wav"), settings)


def test_base64_with_and_without_data_uri_decodes_to_the_same_bytes(settings, tmp_path):
    raw = make_image(tmp_path / "a.png").read_bytes()
    encoded = base64.b64encode(raw).decode()
    decode_base64("image_base64", encoded, "image", tmp_path / "plain.bin", settings)
    decode_base64("image_base64", "data:image/png;base64," + encoded, "image", tmp_path / "uri.bin", settings)
    decode_base64("image_base64", encoded[:50] + "\n" + encoded[50:], "image", tmp_path / "wrapped.bin", settings)
    for name in ("plain.bin", "uri.bin", "wrapped.bin"):
        assert (tmp_path / name).read_bytes() == raw


def test_invalid_base64_is_an_error_naming_the_field(settings, tmp_path):
    with pytest.raises(InputError, match="^wav_base64: is not valid Base64"):
        decode_base64("wav_base64", "this is not base64!!", "audio", tmp_path / "x.bin", settings)


def test_data_uri_contradicting_the_field_is_refused(settings, tmp_path):
    payload = base64.b64encode(b"RIFF....WAVE").decode()
    with pytest.raises(InputError, match="image_base64: the data URI says 'audio/wav'"):
        decode_base64("image_base64", f"data:audio/wav;base64,{payload}", "image", tmp_path / "x.bin", settings)


def test_base64_over_the_limit_is_refused_before_decoding(settings, tmp_path):
    small = replace(settings, max_base64_bytes=100)
    with pytest.raises(InputError, match="over the 100-character limit"):
        decode_base64("image_base64", "A" * 400, "image", tmp_path / "x.bin", small)
    assert not (tmp_path / "x.bin").exists()


def test_image_check_reads_size_and_refuses_other_content(settings, tmp_path):
    assert check_image(make_image(tmp_path / "a.jpg", (80, 60), "JPEG"), "image_path", settings) == (80, 60)
    with pytest.raises(InputError, match="image_base64: the data is not a readable image"):
        check_image(make_wav(tmp_path / "voice.wav"), "image_base64", settings)


def test_truncated_image_is_refused(settings, tmp_path):
    data = make_image(tmp_path / "a.png", (256, 256)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable image"):
        check_image(tmp_path / "cut.png", "image_path", settings)


def test_decompression_bomb_is_refused_from_the_header(settings, tmp_path):
    Image.new("1", (6000, 6000)).save(tmp_path / "bomb.png")
    with pytest.raises(InputError, match="over the limit of 1000000 pixels"):
        check_image(tmp_path / "bomb.png", "image_path", replace(settings, max_image_pixels=1_000_000))


@pytest.mark.parametrize(
    "codec,container,suffix", [("libmp3lame", "mp3", "mp3"), ("aac", "ipod", "m4a"), ("flac", "flac", "flac"),
                               ("libopus", "ogg", "ogg")]
)
def test_compressed_audio_formats_are_probed_for_their_length(settings, tmp_path, codec, container, suffix):
    path = make_encoded_audio(tmp_path / f"voice.{suffix}", 1.5, codec, container)
    assert probe_audio(path, "wav_path", settings) == pytest.approx(1.5, abs=0.1)


def test_wav_length_is_exact(settings, tmp_path):
    assert probe_audio(make_wav(tmp_path / "v.wav", 2.0), "wav_path", settings) == pytest.approx(2.0, abs=0.001)


def test_audio_over_the_length_limit_is_refused(settings, tmp_path):
    with pytest.raises(InputError, match="wav_path: the audio is longer than the 1-second limit"):
        probe_audio(make_wav(tmp_path / "v.wav", 2.0), "wav_path", replace(settings, max_audio_seconds=1.0))


def test_an_image_is_not_audio(settings, tmp_path):
    with pytest.raises(InputError, match="wav_base64: the data is not"):
        probe_audio(make_image(tmp_path / "a.png"), "wav_base64", settings)


def test_video_is_probed_and_a_still_image_is_not_a_video(settings, tmp_path):
    assert probe_video(make_video(tmp_path / "clip.mp4", 1.0), "video_path", settings) == pytest.approx(1.0, abs=0.1)
    with pytest.raises(InputError, match="video_path: the data is not a video"):
        probe_video(make_image(tmp_path / "still.png"), "video_path", settings)


def test_soundtrack_para_overlays_and_add_concatenates(tmp_path):
    one, two = make_wav(tmp_path / "1.wav", 1.0), make_wav(tmp_path / "2.wav", 0.5, rate=22050, frequency=440)
    for mode, expected in (("para", 1.0), ("add", 1.5)):
        out = make_soundtrack([one, two], mode, tmp_path / f"{mode}.wav")
        with wave.open(str(out)) as track:
            assert track.getnchannels() == 2
            assert track.getnframes() / track.getframerate() == pytest.approx(expected, abs=0.01)


def test_speaker_masks_cover_their_boxes_and_the_background_the_rest(tmp_path):
    files = make_speaker_masks(((0.0, 0.0, 0.5, 1.0), (0.5, 0.25, 1.0, 0.75)), (64, 32), tmp_path)
    first, second, background = (np.asarray(Image.open(files[k]).convert("L")) > 127 for k in
                                 ("speaker_mask_1", "speaker_mask_2", "speaker_mask_background"))
    assert first.shape == (32, 64)
    assert first[:, :32].all() and not first[:, 32:].any()
    assert second[8:24, 32:].all() and not second[:8].any()
    assert (first | second | background).all() and not (background & (first | second)).any()


def test_prepare_media_for_a_multi_job_builds_soundtrack_and_masks(settings, inputs):
    request = parse_request(
        {"person_count": "multi", "image_path": str(make_image(inputs / "f.png")),
         "wav_path": str(make_wav(inputs / "a.wav", 1.0)), "wav_base64_2":
             base64.b64encode(make_wav(inputs / "b.wav", 2.0).read_bytes()).decode(), "multi_audio_type": "add"},
        2000,
    )
    with job_directory(settings, "job-1") as job_dir:
        media = prepare_media(request, job_dir, settings)
        assert media.audio_seconds == pytest.approx({"audio_1": 1.0, "audio_2": 2.0}, abs=0.01)
        assert media.files["audio_2"].suffix == ".wav" and media.files["audio_2"].parent == job_dir
        assert {"soundtrack", "speaker_mask_1", "speaker_mask_2", "speaker_mask_background"} <= media.files.keys()
    assert not job_dir.exists()


def test_job_directory_is_removed_even_when_the_job_fails(settings):
    with pytest.raises(RuntimeError):
        with job_directory(settings, "job/../../x") as job_dir:
            assert job_dir.parent == settings.job_root
            raise RuntimeError("boom")
    assert not job_dir.exists()


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
    import infinitetalk_worker.media as media

    real_check = media.check_public_url

    def first_hop_trusted(key, url, settings_):
        calls.append(url)
        return real_check(key, url, settings_ if len(calls) > 1 else settings)

    monkeypatch.setattr(media, "check_public_url", first_hop_trusted)
    with pytest.raises(InputError, match="169.254.169.254"):
        download_url("image_url", base + "/hop", tmp_path / "a", replace(settings, allow_private_urls=False))
    assert calls[-1].startswith("http://169.254.169.254")
