"""Output delivery: raw Base64 by default, the volume when asked or when too large, never a silent drop."""

from __future__ import annotations

import base64
import errno
from dataclasses import replace
from pathlib import Path

import pytest

from infinitetalk_worker.config import Settings
from infinitetalk_worker.delivery import FORBIDDEN_KEYS, deliver, video_metadata, write_to_volume
from infinitetalk_worker.errors import DeliveryError
from infinitetalk_worker.request import parse_request
from testsupport.media_factory import make_video

META = {"seed": 3, "workflow": "i2v_single.json", "timings": {"inputs_s": 0.1}}


def request(**extra):
    return parse_request({"image_path": "/a.png", "wav_path": "/b.wav", **extra}, 100)


@pytest.fixture
def video(tmp_path) -> Path:
    return make_video(tmp_path / "out.mp4", 1.0, (64, 48), with_audio=True)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(volume_root=tmp_path / "no-volume", job_root=tmp_path / "jobs")


def test_default_is_raw_base64_with_metadata(video, settings):
    result = deliver(video, request(), "name1", settings, META)
    assert base64.b64decode(result["video"], validate=True) == video.read_bytes()
    assert not result["video"].startswith("data:")
    assert result["seed"] == 3 and result["delivered_as"] == "base64"
    assert "delivery_s" in result["timings"]
    assert not FORBIDDEN_KEYS & result.keys()


def test_metadata_describes_the_real_video(video):
    meta = video_metadata(video)
    assert (meta["width"], meta["height"], meta["frames"], meta["fps"]) == (64, 48, 25, 25.0)
    assert meta["duration_s"] == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("extra", [{"network_volume": True}, {"output": "volume"}, {"network_volume": "true"}])
def test_volume_delivery_writes_a_unique_file(video, settings, tmp_path, extra):
    volume = tmp_path / "runpod-volume"
    volume.mkdir()
    result = deliver(video, request(**extra), "20260101-job-abc", replace(settings, volume_root=volume), META)
    assert result["video_path"] == str(volume / "20260101-job-abc.mp4")
    assert Path(result["video_path"]).read_bytes() == video.read_bytes()
    assert "video" not in result and list(volume.iterdir()) == [volume / "20260101-job-abc.mp4"]


@pytest.mark.parametrize("key,value", [("network_volume", True), ("output", "volume")])
def test_volume_requested_but_absent_is_an_error_naming_the_key_that_asked(video, settings, key, value):
    expected = f"^{key}: the network volume was requested, but nothing writable is mounted"
    with pytest.raises(DeliveryError, match=expected):
        deliver(video, request(**{key: value}), "n", settings, META)


def test_too_large_for_inline_goes_to_the_volume_when_there_is_one(video, settings, tmp_path):
    volume = tmp_path / "vol"
    volume.mkdir()
    small = replace(settings, volume_root=volume, inline_output_limit_bytes=100)
    result = deliver(video, request(), "big", small, {**META, "warnings": ["an earlier warning"]})
    assert result["delivered_as"] == "volume" and Path(result["video_path"]).is_file()
    assert "video" not in result
    size_mb = f"{(video.stat().st_size + 2) // 3 * 4 / 1e6:.1f}"
    assert result["warnings"] == [
        "an earlier warning",
        f"The video is {size_mb} MB as Base64, over the 0.0 MB returned inline (INLINE_OUTPUT_LIMIT_BYTES), so it "
        "was written to the network volume: read `video_path`. This result has no `video` key; a client that reads "
        "only `video` shows nothing.",
    ]


def test_a_result_that_fits_inline_or_went_where_asked_has_no_warning(video, settings, tmp_path):
    volume = tmp_path / "vol"
    volume.mkdir()
    assert "warnings" not in deliver(video, request(), "fits", settings, META)
    with_volume = replace(settings, volume_root=volume)
    assert "warnings" not in deliver(video, request(network_volume=True), "asked", with_volume, META)


def test_too_large_with_nowhere_to_put_it_is_a_clear_error(video, settings):
    with pytest.raises(DeliveryError, match="over the 0.0 MB that RunPod can return inline; attach a network volume"):
        deliver(video, request(), "big", replace(settings, inline_output_limit_bytes=100), META)


def test_volume_full_leaves_no_partial_file_under_the_final_name(video, settings, tmp_path, monkeypatch):
    volume = tmp_path / "vol"
    volume.mkdir()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(DeliveryError, match="Writing the video to the network volume failed: No space left on device"):
        write_to_volume(video, "job", replace(settings, volume_root=volume))
    assert list(volume.iterdir()) == []


def test_unreadable_output_is_reported(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(DeliveryError, match="not a readable video"):
        video_metadata(tmp_path / "bad.mp4")


def test_the_result_never_prints_its_video(video, settings):
    result = deliver(video, request(), "n", settings, META)
    text = f"{result} {({'output': result})!r}"
    assert result["video"] not in text and "video" in text and len(text) < 300
    import json

    assert json.loads(json.dumps(result))["video"] == result["video"]


def test_the_inline_limit_cannot_exceed_what_runpod_accepts():
    from infinitetalk_worker.config import SettingsError, load_settings

    assert load_settings({"INLINE_OUTPUT_LIMIT_BYTES": "20000000"}).inline_output_limit_bytes == 20_000_000
    too_large = "INLINE_OUTPUT_LIMIT_BYTES='50000000' is over the 20000000 bytes RunPod accepts"
    with pytest.raises(SettingsError, match=too_large):
        load_settings({"INLINE_OUTPUT_LIMIT_BYTES": "50000000"})
