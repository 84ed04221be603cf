"""Hand a finished video back through S3: multipart upload, then a presigned GET URL.

Used when a request asks for ``output: "s3"`` and when a result is too large to return inline
and no network volume is mounted. Missing credentials are an error: the worker never falls
back to a local path the caller cannot read (the RunPod SDK's ``rp_upload`` does that silently).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .config import Settings
from .errors import DeliveryError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# 8 MiB parts keep memory flat for multi-gigabyte videos; four threads saturate a worker's uplink.
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4, use_threads=True
)
VIDEO_CONTENT_TYPE = "video/mp4"


class S3DeliveryError(DeliveryError):
    """The video could not be put in the bucket: a missing setting, refused credentials, a failed upload."""


def upload_video(
    path: Path, key: str, settings: Settings, transfer_config: TransferConfig = TRANSFER_CONFIG
) -> str:
    """Upload ``path`` to ``<bucket>/<S3_KEY_PREFIX><key>`` and return a presigned GET URL for it."""
    require_settings(settings)
    object_key = f"{settings.s3_key_prefix}{key}"
    client = _client(settings)
    try:
        client.upload_file(
            str(path),
            settings.bucket_name,
            object_key,
            ExtraArgs={"ContentType": VIDEO_CONTENT_TYPE},
            Config=transfer_config,
        )
        url = client.generate_presigned_url(
            "get_object",
            Params={"Bucket": settings.bucket_name, "Key": object_key},
            ExpiresIn=settings.s3_url_expiry_s,
        )
    except (BotoCoreError, ClientError, S3UploadFailedError, OSError) as exc:
        raise S3DeliveryError(
            f"S3 delivery: uploading the video to bucket {settings.bucket_name!r} "
            f"as {object_key!r} failed: {exc}"
        ) from exc
    log.info("Uploaded %s (%d bytes) to s3://%s/%s", path.name, path.stat().st_size,
             settings.bucket_name, object_key)
    return url


def require_settings(settings: Settings) -> None:
    """Name every empty setting at once, so one redeploy fixes them all."""
    required = {
        "BUCKET_NAME": settings.bucket_name,
        "BUCKET_ACCESS_KEY_ID": settings.bucket_access_key_id,
        "BUCKET_SECRET_ACCESS_KEY": settings.bucket_secret_access_key,
    }
    missing = [name for name, value in required.items() if not value]
    if missing:
        raise S3DeliveryError(
            "S3 delivery is not configured: set " + ", ".join(missing)
            + " in the endpoint's environment (BUCKET_ENDPOINT_URL too for a non-AWS store)."
        )


def _client(settings: Settings):
    """A client for AWS (endpoint unset) or any S3-compatible store; path-style URLs for the latter."""
    return _shared_client(settings.bucket_endpoint_url, settings.bucket_region, settings.bucket_access_key_id,
                          settings.bucket_secret_access_key)


def warm_up(settings: Settings) -> None:
    """Build the client at start: boto3's import and first client cost about 0.2 s."""
    if settings.s3_configured:
        _client(settings)


@functools.lru_cache(maxsize=4)
def _shared_client(endpoint_url: str, region: str, access_key_id: str, secret_access_key: str):
    """One client per store and credentials, kept: building one takes 70-240 ms (botocore loads its models)."""
    addressing = "path" if endpoint_url else "auto"
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or None,
        region_name=region or None,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": addressing},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        ),
    )
