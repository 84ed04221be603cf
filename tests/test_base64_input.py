"""``*_base64`` inputs: plain, data URI or wrapped Base64 decoded to the same bytes; bad text refused."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from infinitetalk_worker.base64_input import decode_base64
from infinitetalk_worker.config import Settings
from infinitetalk_worker.errors import InputError
from testsupport.media_factory import make_image


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(job_root=tmp_path / "jobs")


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


def test_base64_over_the_limit_is_refused_before_decoding(tmp_path):
    with pytest.raises(InputError, match="over the 100-character limit"):
        decode_base64("image_base64", "A" * 400, "image", tmp_path / "x.bin", Settings(max_base64_bytes=100))
    assert not (tmp_path / "x.bin").exists()
