"""The media stage as a whole: every input fetched, proven and named, derived files built, directory removed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from infinitetalk_worker.config import Settings
from infinitetalk_worker.errors import InputError
from infinitetalk_worker.media import job_directory, prepare_media
from infinitetalk_worker.request import parse_request
from testsupport.media_factory import make_image, make_wav


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    return Settings(job_root=tmp_path / "jobs", allowed_input_roots=[inputs], allow_private_urls=True)


@pytest.fixture
def inputs(settings: Settings) -> Path:
    return settings.allowed_input_roots[0]


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_prepare_media_for_a_multi_job_builds_soundtrack_and_masks(settings, inputs):
    request = parse_request(
        {"person_count": "multi", "image_path": str(make_image(inputs / "f.png")),
         "wav_path": str(make_wav(inputs / "a.wav", 1.0)), "wav_base64_2": b64(make_wav(inputs / "b.wav", 2.0)),
         "multi_audio_type": "add"},
        2000,
    )
    with job_directory(settings, "job-1") as job_dir:
        media = prepare_media(request, job_dir, settings)
        assert media.audio_seconds == pytest.approx({"audio_1": 1.0, "audio_2": 2.0}, abs=0.01)
        assert media.audio_tracks == {"audio_1": (16000, 16000), "audio_2": (32000, 16000)}
        assert media.files["audio_2"].suffix == ".wav" and media.files["audio_2"].parent == job_dir
        assert {"soundtrack", "speaker_mask_1", "speaker_mask_2", "speaker_mask_background"} <= media.files.keys()
    assert not job_dir.exists()


def test_a_base64_wav_cut_to_200_characters_is_refused(settings, inputs):
    """Once rendered as a one-frame video; now a named error before anything else happens."""
    request = parse_request({"image_path": str(make_image(inputs / "f.png")),
                             "wav_base64": b64(make_wav(inputs / "a.wav", 1.0))[:200]}, 2000)
    truncated = pytest.raises(InputError, match="^wav_base64: the audio file is truncated")
    with job_directory(settings, "job-2") as job_dir, truncated:
        prepare_media(request, job_dir, settings)
