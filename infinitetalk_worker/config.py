"""Settings from the environment, read once at start so a job never pays for parsing them.

Each setting is declared once, below, with its environment variable, default, meaning and range;
``load_settings`` reads the variables from that declaration and the README's settings and limits
tables are generated from it (``python -m infinitetalk_worker schema --write-readme``). Adding a
setting is one line in ``Settings``; the README check then says the tables need regenerating.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError
from pydantic.dataclasses import dataclass

from .memory_profile import PROFILE_NAMES, parse_profile_setting

REPO_ROOT = Path(__file__).resolve().parent.parent
# RunPod drops larger results (20 MB on /runsync, 10 MB on /run) and the client sees COMPLETED with nothing.
RUNPOD_RESULT_CAP_BYTES = 20_000_000
MIB = 1024 * 1024


class SettingsError(ValueError):
    """A setting in the environment is malformed; raised at start, never during a job."""


def setting(default: Any, env: str, description: str, *, shown_default: str | None = None,
            limit: tuple[str, str] | None = None, **constraints: Any) -> Any:
    """Declare a setting: its variable, default and meaning, and (``limit``) its row in the limits table.

    ``shown_default`` is what the docs print when the default is computed at run time; ``limit`` is
    (what is limited, how), and settings sharing one ``limit`` share its row.
    """
    extra: dict[str, Any] = {"env": env}
    if shown_default is not None:
        extra["x-default"] = shown_default
    if limit is not None:
        extra["x-limit"] = list(limit)
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return Field(**factory, description=description, json_schema_extra=extra, **constraints)


def _paths(value: Any) -> Any:
    """ALLOWED_INPUT_ROOTS: colon-separated, each resolved once at start."""
    if isinstance(value, str):
        value = [part for part in value.split(":") if part.strip()]
    return [Path(part).expanduser().resolve() for part in value]


def _attention_mode(value: Any) -> Any:
    """Unset keeps the workflow's choice; "auto" without the entrypoint's probe is sdpa."""
    if value is None:
        return None
    mode = str(value).strip().lower()
    if mode not in ("", "auto", "sdpa", "sageattn"):
        raise ValueError("must be auto, sdpa or sageattn")
    return {"": None, "auto": "sdpa"}.get(mode, mode)


def _optional_path(value: Any) -> Any:
    return None if value in (None, "") else Path(value)


DOWNLOAD_TIME = ("URL download time", "connect / between bytes / whole download, redirects included")


@dataclass(frozen=True)
class Settings:
    """Every tunable of the worker (``dataclasses.replace`` works and validates again)."""

    comfyui_url: Annotated[str, BeforeValidator(lambda v: str(v).strip().rstrip("/"))] = setting(
        "http://127.0.0.1:8188", "COMFYUI_URL", "the ComfyUI the worker drives")
    workflow_dir: Annotated[Path, BeforeValidator(lambda v: Path(v).resolve())] = setting(
        REPO_ROOT / "workflows", "WORKFLOW_DIR", "the workflow set; `workflows/smoke` is the CPU smoke set")
    volume_root: Path = setting(
        Path("/runpod-volume"), "VOLUME_ROOT", "the network volume (results with `network_volume`, allowed inputs)")
    allowed_input_roots: Annotated[list[Path], BeforeValidator(_paths)] = setting(
        list, "ALLOWED_INPUT_ROOTS", "colon-separated directories `*_path` inputs may name",
        shown_default="`VOLUME_ROOT` and `<repo>/examples`")
    allow_private_urls: bool = setting(
        False, "ALLOW_PRIVATE_URLS", "let `*_url` inputs reach loopback/private addresses (local testing only)")
    job_root: Path = setting(
        Path("/tmp/infinitetalk-jobs"), "JOB_ROOT",
        "where each job's private directory is made (removed after the job)")
    max_base64_bytes: int = setting(
        200 * MIB, "MAX_BASE64_BYTES", "size cap for one Base64 input (characters)",
        limit=("one Base64 input", "characters of text"), gt=0)
    max_download_bytes: int = setting(
        500 * MIB, "MAX_DOWNLOAD_BYTES", "size cap for one URL input",
        limit=("one URL input", "bytes received (after any gzip decoding; a declared `Content-Length` over it is "
                                "refused before reading)"), gt=0)
    download_connect_timeout_s: float = setting(
        10.0, "DOWNLOAD_CONNECT_TIMEOUT_S", "bound on connecting for a URL download", limit=DOWNLOAD_TIME, gt=0)
    download_read_timeout_s: float = setting(
        30.0, "DOWNLOAD_READ_TIMEOUT_S", "bound on the wait between bytes of a URL download", limit=DOWNLOAD_TIME, gt=0)
    download_total_timeout_s: float = setting(
        300.0, "DOWNLOAD_TOTAL_TIMEOUT_S", "bound on a whole URL download, redirects included", limit=DOWNLOAD_TIME,
        gt=0)
    max_image_pixels: int = setting(
        40_000_000, "MAX_IMAGE_PIXELS", "pixel cap for an image (decompression bombs)",
        limit=("image size", "width × height, read from the header before any pixel is decoded (decompression bombs)"),
        gt=0)
    max_audio_seconds: float = setting(
        600.0, "MAX_AUDIO_SECONDS", "longest accepted audio",
        limit=("audio length", "decoding stops as soon as the limit is passed, so an hour of silence packed into a "
                               "small FLAC is refused quickly"), gt=0)
    max_video_seconds: float = setting(
        600.0, "MAX_VIDEO_SECONDS", "longest accepted input video", limit=("input video length", ""), gt=0)
    max_prompt_chars: int = setting(
        2000, "MAX_PROMPT_CHARS", "longest accepted prompt", limit=("`prompt`, `negative_prompt`", "characters"), gt=0)
    max_text_chars: int = setting(
        2000, "MAX_TEXT_CHARS", "longest accepted text to speak",
        limit=("`text`, `text_2`, `dialogue`", "characters"), gt=0)
    kokoro_model_file: Annotated[Path | None, BeforeValidator(_optional_path)] = setting(
        None, "KOKORO_MODEL", "the text-to-speech model file (Kokoro-82M ONNX)",
        shown_default="`kokoro/kokoro-v1.0.onnx` in the first models folder that has it")
    kokoro_voices_file: Annotated[Path | None, BeforeValidator(_optional_path)] = setting(
        None, "KOKORO_VOICES", "the text-to-speech voices file (an .npz of style arrays, one per voice)",
        shown_default="`kokoro/voices-v1.0.bin` in the first models folder that has it")
    job_deadline_s: float = setting(
        3600.0, "JOB_DEADLINE_S", "a job running longer is interrupted and fails",
        limit=("whole job", "interrupted in ComfyUI and failed after"), gt=0)
    http_timeout_s: float = setting(
        30.0, "COMFYUI_HTTP_TIMEOUT_S", "bound on each HTTP call to ComfyUI",
        limit=("each HTTP call to ComfyUI", ""), gt=0)
    ws_idle_timeout_s: float = setting(
        30.0, "COMFYUI_WS_IDLE_TIMEOUT_S", "silence on the websocket after which `/history` is polled",
        limit=("websocket silence", "after this, `/history` is polled"), gt=0)
    comfyui_log_file: Annotated[Path | None, BeforeValidator(_optional_path)] = setting(
        None, "COMFYUI_LOG_FILE", "ComfyUI's log; its tail is quoted when ComfyUI dies")
    comfyui_dir: Annotated[Path | None, BeforeValidator(_optional_path)] = setting(
        None, "COMFYUI_DIR", "ComfyUI's directory, to remove the job's output files after delivery")
    inline_output_limit_bytes: int = setting(
        9 * MIB, "INLINE_OUTPUT_LIMIT_BYTES",
        f"largest Base64 result returned inline; at most {RUNPOD_RESULT_CAP_BYTES}, what RunPod accepts",
        limit=("inline result", "larger results go to the volume, else S3, else a clear error"),
        gt=0, le=RUNPOD_RESULT_CAP_BYTES)
    progress_interval_s: float = setting(
        3.0, "PROGRESS_INTERVAL_S", "at most one progress update per interval (0: every update)", ge=0)
    bucket_endpoint_url: str = setting("", "BUCKET_ENDPOINT_URL", "S3 endpoint (empty: AWS)")
    bucket_access_key_id: str = setting("", "BUCKET_ACCESS_KEY_ID", "S3 access key")
    bucket_secret_access_key: str = setting("", "BUCKET_SECRET_ACCESS_KEY", "S3 secret key", repr=False)
    bucket_name: str = setting("", "BUCKET_NAME", "S3 bucket for results")
    bucket_region: str = setting("", "BUCKET_REGION", "the bucket's region")
    s3_key_prefix: str = setting("infinitetalk/", "S3_KEY_PREFIX", "key prefix of uploaded results")
    s3_url_expiry_s: int = setting(7 * 24 * 3600, "S3_URL_EXPIRY_S", "lifetime of the presigned URL", gt=0)
    run_startup_checks: bool = setting(
        True, "RUN_STARTUP_CHECKS", "check nodes and models against the lock before taking jobs")
    attention_mode: Annotated[Literal["sdpa", "sageattn"] | None, BeforeValidator(_attention_mode)] = setting(
        None, "WAN_ATTENTION_MODE",
        "attention kernel written into the workflows' `WanVideoModelLoader`: `sdpa` or `sageattn`; `auto` is `sdpa` "
        "when the worker runs without the entrypoint", shown_default="the workflow's own")
    memory_profile: Annotated[str, BeforeValidator(parse_profile_setting)] = setting(
        "auto", "MEMORY_PROFILE",
        "block swap, offload and VAE tiling (see \"Memory\"): `auto` picks them from the GPU's memory at start; "
        f"a name ({', '.join(f'`{n}`' for n in PROFILE_NAMES)}) forces that row; `workflow` keeps the workflow's own")
    allow_standin_models: bool = setting(
        False, "ALLOW_STANDIN_MODELS",
        "run on stand-in model weights (a CPU rehearsal); without it the start-up checks refuse to start when a model "
        "file the workflows use is a stand-in; with it each result says so and lists the graph changes in `warnings`")

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


def setting_fields() -> dict[str, Any]:
    """Each setting's pydantic field (default, description, env name in ``json_schema_extra``), in order."""
    return dict(Settings.__pydantic_fields__)


def env_name(name: str) -> str:
    return setting_fields()[name].json_schema_extra["env"]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build ``Settings`` from the environment; malformed values fail here, at start. Blank means unset."""
    env = os.environ if env is None else env
    given = {name: env[env_name(name)].strip() for name in setting_fields() if env.get(env_name(name), "").strip()}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError(" ".join(_problem(error, given) for error in exc.errors(include_url=False))) from None


def _problem(error: dict[str, Any], given: Mapping[str, str]) -> str:
    """One sentence naming the variable, its value as set, and what is wrong with it."""
    name = str(error["loc"][0])
    raw = given.get(name, "")
    kind, ctx = error["type"], error.get("ctx") or {}
    if name == "inline_output_limit_bytes" and kind == "less_than_equal":
        problem = (f"is over the {RUNPOD_RESULT_CAP_BYTES} bytes RunPod accepts in a result; larger videos go to "
                   "the network volume or S3")
    elif kind in ("greater_than", "greater_than_equal"):
        problem = "must be greater than zero" if ctx.get("gt") == 0 else f"must be at least {ctx.get('ge'):g}"
    elif kind.startswith(("int_", "float_")):
        problem = "must be a whole number" if kind.startswith("int_") else "must be a number"
    elif kind.startswith("bool_"):
        problem = "must be true or false"
    else:
        problem = error["msg"].replace("Value error, ", "").replace("Input should", "must")
    return f"Setting {env_name(name)}={raw!r} {problem}."
