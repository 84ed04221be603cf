"""What an error repeats of a user's value: bounded, URLs with their port and without secrets.

The helpers live in ``errors``; the tests go through the functions that refuse real inputs, so they
check the message a user reads, wherever it is made.
"""

from __future__ import annotations

import http.server
import threading

import pytest

from infinitetalk_worker.config import Settings
from infinitetalk_worker.downloads import download_url
from infinitetalk_worker.errors import MAX_SHOWN_CHARS, InputError, english_list, shown, shown_url
from infinitetalk_worker.input_paths import resolve_input_path
from infinitetalk_worker.probe import check_image
from infinitetalk_worker.request import parse_request
from testsupport.media_factory import make_image

LONG = "/runpod-volume/" + "a" * 5000 + ".png"
BOUND = MAX_SHOWN_CHARS + 40  # the quoted value plus "(N characters)"


def test_a_long_value_is_cut_in_the_middle_and_its_length_said():
    text = shown(LONG)
    assert len(text) <= BOUND
    assert text.startswith("'/runpod-volume/aaa") and text.endswith(".png' (5019 characters)")
    assert shown("short") == "'short'" and shown(2.50) == "2.5"


def test_values_of_any_type_stay_bounded():
    assert len(shown(list(range(100_000)))) <= BOUND
    assert len(shown({"k" * 5000: ["v" * 5000] * 100})) <= 4 * BOUND
    assert shown(10**5000) == "a number too long to show"


def test_urls_keep_their_port_and_lose_credentials_query_and_fragment():
    assert shown_url("https://user:secret@example.com:8443/a/b.wav?X-Amz-Signature=abc#t") == \
        "'https://example.com:8443/a/b.wav'"
    assert shown_url("http://[2001:db8::1]:8080/v.wav") == "'http://[2001:db8::1]:8080/v.wav'"
    assert len(shown_url("https://example.com/" + "x" * 5000)) <= BOUND


def test_english_list():
    assert english_list(["a", "b", "c"]) == "a, b or c"
    assert english_list(["a", "b"], "and") == "a and b"
    assert english_list(["a"]) == "a"


@pytest.mark.parametrize("field", ["input_type", "output", "multi_audio_type"])
def test_request_errors_never_echo_more_than_the_bound(field):
    with pytest.raises(InputError) as caught:
        parse_request({"image_path": "/f.png", "wav_path": "/v.wav", field: "x" * 5000}, 100)
    assert len(str(caught.value)) < 200 and "(5000 characters)" in str(caught.value)


def test_a_5000_character_path_is_not_echoed_whole(tmp_path):
    with pytest.raises(InputError) as caught:
        resolve_input_path("image_path", LONG, Settings(allowed_input_roots=[tmp_path]))
    message = str(caught.value)
    assert message.startswith("image_path: '/runpod-volume/aaa") and "(5019 characters)" in message
    assert len(message) < 300


@pytest.fixture
def not_found_server():
    class Missing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server API)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Missing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_url_error_shows_the_port_and_hides_the_query(not_found_server, tmp_path):
    url = f"http://127.0.0.1:{not_found_server}/voice.wav?token=secret"
    with pytest.raises(InputError) as caught:
        download_url("wav_url", url, tmp_path / "a.bin", Settings(allow_private_urls=True))
    assert str(caught.value) == f"wav_url: 'http://127.0.0.1:{not_found_server}/voice.wav' answered HTTP 404."


def test_a_long_unresolvable_host_is_not_echoed_whole(tmp_path):
    with pytest.raises(InputError) as caught:
        download_url("image_url", "http://" + "h" * 5000 + ".example/x.png", tmp_path / "a.bin", Settings())
    assert str(caught.value).startswith("image_url: ") and len(str(caught.value)) < 400


def test_the_image_error_lists_exactly_the_formats_that_are_accepted(tmp_path):
    with pytest.raises(InputError) as caught:
        check_image(make_image(tmp_path / "face.ppm", fmt="PPM"), "image_path", Settings())
    message = str(caught.value)
    assert message == "image_path: PPM images are not accepted; send PNG, JPEG, WebP, BMP, TIFF or GIF."
    for fmt in ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"):
        assert check_image(make_image(tmp_path / f"face.{fmt.lower()}", (40, 30), fmt), "image_path", Settings()) \
            == (40, 30), fmt
