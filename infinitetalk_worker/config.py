"""Settings from the environment, read once at start so a job never pays for parsing them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
# RunPod drops larger results (20 MB on /runsync, 10 MB on /run) and the client sees COMPLETED with nothing.
RUNPOD_RESULT_CAP_BYTES = 20_000_000


class SettingsError(ValueError):
    """A setting in the environment is malformed; raised at start, never during a job."""


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _number(env: Mapping[str, str], name: str, default: float, kind: type = float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise SettingsError(f"Setting {name}={raw!r} is not a valid {kind.__name__}.") from exc
    if value <= 0:
        raise SettingsError(f"Setting {name}={raw!r} must be greater than zero.")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"Setting {name}={raw!r} must be true or false.")


def _paths(env: Mapping[str, str], name: str, default: list[Path]) -> list[Path]:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    return [Path(part).expanduser().resolve() for part in raw.split(":") if part.strip()]


@dataclass(frozen=True)
class Settings:
    """Every tunable of the worker; see the README's Settings table for meaning and defaults."""

    comfyui_url: str = "http://127.0.0.1:8188"
    workflow_dir: Path = REPO_ROOT / "workflows"
    volume_root: Path = Path("/runpod-volume")
    allowed_input_roots: list[Path] = field(default_factory=list)
    allow_private_urls: bool = False
    job_root: Path = Path("/tmp/infinitetalk-jobs")
    comfyui_dir: Path | None = None
    comfyui_log_file: Path | None = None
    max_download_bytes: int = 500 * 1024 * 1024
    max_base64_bytes: int = 200 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_audio_seconds: float = 600.0
    max_video_seconds: float = 600.0
    max_prompt_chars: int = 2000
    download_connect_timeout_s: float = 10.0
    download_read_timeout_s: float = 30.0
    download_total_timeout_s: float = 300.0
    job_deadline_s: float = 3600.0
    http_timeout_s: float = 30.0
    ws_idle_timeout_s: float = 30.0
    inline_output_limit_bytes: int = 9 * 1024 * 1024
    progress_interval_s: float = 3.0
    bucket_endpoint_url: str = ""
    bucket_access_key_id: str = ""
    bucket_secret_access_key: str = ""
    bucket_name: str = ""
    bucket_region: str = ""
    s3_key_prefix: str = "infinitetalk/"
    s3_url_expiry_s: int = 7 * 24 * 3600
    run_startup_checks: bool = True
    attention_mode: str | None = None
    allow_standin_models: bool = False

    @property
    def examples_dir(self) -> Path:
        return REPO_ROOT / "examples"

    @property
    def input_roots(self) -> list[Path]:
        """Directories whose files a request may name with a ``*_path`` key."""
        return self.allowed_input_roots or [self.volume_root, self.examples_dir]

    @property
    def s3_configured(self) -> bool:
        return bool(self.bucket_name and self.bucket_access_key_id and self.bucket_secret_access_key)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build ``Settings`` from the environment; malformed values fail here, at start."""
    env = os.environ if env is None else env
    comfyui_dir = _text(env, "COMFYUI_DIR", "")
    log_file = _text(env, "COMFYUI_LOG_FILE", "")
    return Settings(
        comfyui_url=_text(env, "COMFYUI_URL", Settings.comfyui_url).rstrip("/"),
        workflow_dir=Path(_text(env, "WORKFLOW_DIR", str(Settings.workflow_dir))).resolve(),
        volume_root=Path(_text(env, "VOLUME_ROOT", str(Settings.volume_root))),
        allowed_input_roots=_paths(env, "ALLOWED_INPUT_ROOTS", []),
        allow_private_urls=_flag(env, "ALLOW_PRIVATE_URLS", False),
        job_root=Path(_text(env, "JOB_ROOT", str(Settings.job_root))),
        comfyui_dir=Path(comfyui_dir) if comfyui_dir else None,
        comfyui_log_file=Path(log_file) if log_file else None,
        max_download_bytes=int(_number(env, "MAX_DOWNLOAD_BYTES", Settings.max_download_bytes, int)),
        max_base64_bytes=int(_number(env, "MAX_BASE64_BYTES", Settings.max_base64_bytes, int)),
        max_image_pixels=int(_number(env, "MAX_IMAGE_PIXELS", Settings.max_image_pixels, int)),
        max_audio_seconds=_number(env, "MAX_AUDIO_SECONDS", Settings.max_audio_seconds),
        max_video_seconds=_number(env, "MAX_VIDEO_SECONDS", Settings.max_video_seconds),
        max_prompt_chars=int(_number(env, "MAX_PROMPT_CHARS", Settings.max_prompt_chars, int)),
        download_connect_timeout_s=_number(env, "DOWNLOAD_CONNECT_TIMEOUT_S", Settings.download_connect_timeout_s),
        download_read_timeout_s=_number(env, "DOWNLOAD_READ_TIMEOUT_S", Settings.download_read_timeout_s),
        download_total_timeout_s=_number(env, "DOWNLOAD_TOTAL_TIMEOUT_S", Settings.download_total_timeout_s),
        job_deadline_s=_number(env, "JOB_DEADLINE_S", Settings.job_deadline_s),
        http_timeout_s=_number(env, "COMFYUI_HTTP_TIMEOUT_S", Settings.http_timeout_s),
        ws_idle_timeout_s=_number(env, "COMFYUI_WS_IDLE_TIMEOUT_S", Settings.ws_idle_timeout_s),
        inline_output_limit_bytes=_inline_limit(env),
        progress_interval_s=_number(env, "PROGRESS_INTERVAL_S", Settings.progress_interval_s),
        bucket_endpoint_url=_text(env, "BUCKET_ENDPOINT_URL", ""),
        bucket_access_key_id=_text(env, "BUCKET_ACCESS_KEY_ID", ""),
        bucket_secret_access_key=_text(env, "BUCKET_SECRET_ACCESS_KEY", ""),
        bucket_name=_text(env, "BUCKET_NAME", ""),
        bucket_region=_text(env, "BUCKET_REGION", ""),
        s3_key_prefix=_text(env, "S3_KEY_PREFIX", Settings.s3_key_prefix),
        s3_url_expiry_s=int(_number(env, "S3_URL_EXPIRY_S", Settings.s3_url_expiry_s, int)),
        run_startup_checks=_flag(env, "RUN_STARTUP_CHECKS", True),
        attention_mode=_attention_mode(env),
        allow_standin_models=_flag(env, "ALLOW_STANDIN_MODELS", False),
    )


def _inline_limit(env: Mapping[str, str]) -> int:
    limit = int(_number(env, "INLINE_OUTPUT_LIMIT_BYTES", Settings.inline_output_limit_bytes, int))
    if limit > RUNPOD_RESULT_CAP_BYTES:
        raise SettingsError(
            f"Setting INLINE_OUTPUT_LIMIT_BYTES={limit} is over the {RUNPOD_RESULT_CAP_BYTES} bytes RunPod accepts "
            "in a result; larger videos go to the network volume or S3."
        )
    return limit


def _attention_mode(env: Mapping[str, str]) -> str | None:
    """WAN_ATTENTION_MODE: unset keeps the workflow's choice; "auto" without the entrypoint's probe is sdpa."""
    raw = env.get("WAN_ATTENTION_MODE", "").strip().lower()
    if not raw:
        return None
    if raw == "auto":
        return "sdpa"
    if raw not in ("sdpa", "sageattn"):
        raise SettingsError(f"Setting WAN_ATTENTION_MODE={raw!r} must be auto, sdpa or sageattn.")
    return raw
