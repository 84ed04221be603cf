"""S3 delivery against a real S3 protocol server (moto in server mode on loopback)."""

from __future__ import annotations

import dataclasses
import os
import socket

import boto3
import pytest
import requests
from boto3.s3.transfer import TransferConfig

from infinitetalk_worker.config import Settings
from infinitetalk_worker.errors import DeliveryError
from infinitetalk_worker.s3_delivery import S3DeliveryError, upload_video

moto_server = pytest.importorskip("moto.server")

MIB = 1024 * 1024
BUCKET = "videos"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def settings(s3_endpoint, monkeypatch) -> Settings:
    # boto3 must take the credentials from Settings, not from anything lying around in the environment.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    configured = Settings(
        bucket_endpoint_url=s3_endpoint,
        bucket_access_key_id="test-key",
        bucket_secret_access_key="test-secret",
        bucket_name=BUCKET,
        bucket_region="us-east-1",
        s3_key_prefix="renders/",
        s3_url_expiry_s=600,
    )
    client = _client(configured)
    existing = [b["Name"] for b in client.list_buckets()["Buckets"]]
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)
    return configured


def _client(settings: Settings):
    return boto3.client(
        "s3",
        endpoint_url=settings.bucket_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=settings.bucket_access_key_id,
        aws_secret_access_key=settings.bucket_secret_access_key,
    )


def _video_file(tmp_path, size: int):
    path = tmp_path / "result.mp4"
    # Varying bytes, so a part stored twice or out of order would not compare equal.
    path.write_bytes(os.urandom(size))
    return path


def test_large_video_goes_up_in_parts_and_the_presigned_url_serves_it(settings, tmp_path):
    video = _video_file(tmp_path, 12 * MIB)
    small_parts = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)

    url = upload_video(video, "job-1.mp4", settings, transfer_config=small_parts)

    head = _client(settings).head_object(Bucket=BUCKET, Key="renders/job-1.mp4")
    assert head["ContentType"] == "video/mp4"
    assert head["ContentLength"] == 12 * MIB
    assert head["ETag"].strip('"').endswith("-3"), "a 12 MiB file in 5 MiB parts is a 3-part upload"
    assert "X-Amz-Signature=" in url and "renders/job-1.mp4" in url
    fetched = requests.get(url, timeout=30)
    assert fetched.status_code == 200
    assert fetched.content == video.read_bytes()


def test_default_transfer_settings_upload_a_small_video_in_one_piece(settings, tmp_path):
    video = _video_file(tmp_path, 256 * 1024)

    url = upload_video(video, "small.mp4", settings)

    body = _client(settings).get_object(Bucket=BUCKET, Key="renders/small.mp4")["Body"].read()
    assert body == video.read_bytes()
    assert requests.get(url, timeout=30).content == body


def test_the_url_stops_working_without_its_signature(settings, tmp_path):
    video = _video_file(tmp_path, 1024)
    url = upload_video(video, "signed.mp4", settings)

    unsigned = url.split("?", 1)[0]

    assert requests.get(unsigned, timeout=30).status_code == 403


@pytest.mark.parametrize(
    "blank, named",
    [
        ({"bucket_name": ""}, ["BUCKET_NAME"]),
        ({"bucket_access_key_id": ""}, ["BUCKET_ACCESS_KEY_ID"]),
        ({"bucket_access_key_id": "", "bucket_secret_access_key": ""},
         ["BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY"]),
    ],
)
def test_missing_settings_are_an_error_that_names_them(settings, tmp_path, blank, named):
    video = _video_file(tmp_path, 1024)

    with pytest.raises(S3DeliveryError) as caught:
        upload_video(video, "never.mp4", dataclasses.replace(settings, **blank))

    for name in named:
        assert name in str(caught.value)
    assert isinstance(caught.value, DeliveryError), "the handler reports DeliveryError to the client"


def test_a_refused_upload_is_a_delivery_error_naming_the_bucket(settings, tmp_path):
    video = _video_file(tmp_path, 1024)
    no_such_bucket = dataclasses.replace(settings, bucket_name="missing-bucket")

    with pytest.raises(S3DeliveryError, match="missing-bucket"):
        upload_video(video, "never.mp4", no_such_bucket)


def test_an_unreachable_endpoint_is_a_delivery_error(settings, tmp_path):
    video = _video_file(tmp_path, 1024)
    nobody_listens = dataclasses.replace(settings, bucket_endpoint_url=f"http://127.0.0.1:{_free_port()}")

    with pytest.raises(S3DeliveryError, match="failed"):
        upload_video(video, "never.mp4", nobody_listens)


def _real_video(tmp_path):
    from testsupport.media_factory import make_video

    return make_video(tmp_path / "out.mp4", 1.0, (64, 48), with_audio=True)


def _request(**extra):
    from infinitetalk_worker.request import parse_request

    return parse_request({"image_path": "/a.png", "wav_path": "/b.wav", **extra}, 100)


def test_output_s3_returns_a_presigned_video_url(settings, tmp_path):
    from infinitetalk_worker.delivery import deliver

    video = _real_video(tmp_path)
    result = deliver(video, _request(output="s3"), "job-s3", settings, {"seed": 1, "timings": {}})
    assert result["delivered_as"] == "s3" and "video" not in result and "video_path" not in result
    assert requests.get(result["video_url"], timeout=10).content == video.read_bytes()


def test_a_result_too_large_for_inline_goes_to_s3_when_no_volume_is_mounted(settings, tmp_path):
    from dataclasses import replace

    from infinitetalk_worker.delivery import deliver

    small = replace(settings, inline_output_limit_bytes=100, volume_root=tmp_path / "absent")
    video = _real_video(tmp_path)
    result = deliver(video, _request(), "job-big", small, {"seed": 1, "timings": {}})
    assert result["delivered_as"] == "s3" and result["video_url"].startswith(settings.bucket_endpoint_url)
    assert "video" not in result
    size_mb = f"{(video.stat().st_size + 2) // 3 * 4 / 1e6:.1f}"
    assert result["warnings"] == [
        f"The video is {size_mb} MB as Base64, over the 0.0 MB returned "
        f"inline (INLINE_OUTPUT_LIMIT_BYTES), so it was uploaded to S3: read `video_url` (a link valid for "
        f"{settings.s3_url_expiry_s} s). This result has no `video` key; a client that reads only `video` "
        "shows nothing."
    ]


def test_a_result_asked_for_s3_carries_no_warning(settings, tmp_path):
    from infinitetalk_worker.delivery import deliver

    result = deliver(_real_video(tmp_path), _request(output="s3"), "job-s3", settings, {"timings": {}})
    assert "warnings" not in result


def test_output_s3_without_credentials_is_an_error_not_a_local_path(tmp_path):
    from infinitetalk_worker.delivery import deliver
    from infinitetalk_worker.errors import DeliveryError

    with pytest.raises(DeliveryError, match="BUCKET"):
        deliver(_real_video(tmp_path), _request(output="s3"), "job", Settings(volume_root=tmp_path), {"timings": {}})
