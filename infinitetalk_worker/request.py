"""The job input: the original worker's keys plus this project's additions, checked strictly.

Every violation becomes one English sentence naming the field, so a client sees exactly what to fix.
Keys nobody reads are kept and reported back as warnings instead of being silently dropped.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InputError

DEFAULT_PROMPT = "A person talking naturally"
SIZE_MULTIPLE = 16
MIN_SIZE, MAX_SIZE = 128, 1920
MAX_FRAMES = 10000
MAX_SEED = 2**64 - 1
V2V_MIN_STEPS = 3
MAX_LISTED_KEYS = 20
MAX_SHOWN_CHARS = 60
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

SLOTS: dict[str, tuple[str, str, str]] = {
    "image": ("image_path", "image_url", "image_base64"),
    "video": ("video_path", "video_url", "video_base64"),
    "audio_1": ("wav_path", "wav_url", "wav_base64"),
    "audio_2": ("wav_path_2", "wav_url_2", "wav_base64_2"),
}


def _boolean(value: Any) -> Any:
    """JSON booleans and the strings "true"/"false" only: the original worker read "false" as true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError('must be true or false (a JSON boolean or the string "true"/"false")')


def is_probe(raw: Any) -> bool:
    """Whether a job input is the ``test`` health probe, for every value the model reads as true."""
    if not isinstance(raw, dict) or "test" not in raw:
        return False
    try:
        return _boolean(raw["test"]) is True
    except ValueError:
        return False


def _integer(value: Any) -> Any:
    """Whole numbers, also as digit strings or integral floats; never booleans."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not a boolean")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,30}\s*", value):
        return int(value)
    if isinstance(value, int):
        return value
    raise ValueError("must be a whole number")


def _number(value: Any) -> Any:
    """Ints, floats or numeric strings; never booleans."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError("must be a number")


def _source(value: Any) -> Any:
    """Empty strings count as absent: clients send "" for a field the user left blank."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value.strip() or None


Flag = Annotated[bool, BeforeValidator(_boolean)]
Int = Annotated[int, BeforeValidator(_integer)]
Number = Annotated[float, BeforeValidator(_number)]
Source = Annotated[str | None, BeforeValidator(_source)]
Box = tuple[Number, Number, Number, Number]


class JobRequest(BaseModel):
    """A validated job input; defaults are the original worker's, additions are optional."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)

    input_type: Literal["image", "video"] = "image"
    person_count: Literal["single", "multi"] = "single"
    image_path: Source = None
    image_url: Source = None
    image_base64: Source = None
    video_path: Source = None
    video_url: Source = None
    video_base64: Source = None
    wav_path: Source = None
    wav_url: Source = None
    wav_base64: Source = None
    wav_path_2: Source = None
    wav_url_2: Source = None
    wav_base64_2: Source = None
    prompt: str = DEFAULT_PROMPT
    negative_prompt: str | None = None
    width: Int = Field(512, ge=MIN_SIZE, le=MAX_SIZE)
    height: Int = Field(512, ge=MIN_SIZE, le=MAX_SIZE)
    max_frame: Int | None = Field(None, ge=1, le=MAX_FRAMES)
    force_offload: Flag = True
    network_volume: Flag = False
    seed: Int | None = Field(None, ge=0, le=MAX_SEED)
    steps: Int | None = Field(None, ge=1, le=100)
    cfg: Number | None = Field(None, ge=0.0, le=30.0)
    shift: Number | None = Field(None, ge=0.0, le=100.0)
    audio_scale: Number | None = Field(None, ge=0.0, le=10.0)
    multi_audio_type: Literal["para", "add"] = "para"
    speaker_boxes: tuple[Box, Box] | None = None
    output: Literal["base64", "volume", "s3"] | None = None
    test: Flag = False

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _clean_text(cls, value: str | None) -> str | None:
        """Control characters would end up in the text encoder; tabs and newlines are kept."""
        return None if value is None else CONTROL_CHARS.sub(" ", value).strip()

    @field_validator("speaker_boxes")
    @classmethod
    def _check_boxes(cls, boxes: tuple[Box, Box] | None) -> tuple[Box, Box] | None:
        for index, (x0, y0, x1, y1) in enumerate(boxes or (), start=1):
            if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
                raise ValueError(f"box {index} must have coordinates between 0 and 1")
            if x0 >= x1 or y0 >= y1:
                raise ValueError(f"box {index} must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        return boxes

    @model_validator(mode="after")
    def _check_regions(self) -> "JobRequest":
        """Each region and the background must cover a latent cell (16x16 px), or attention gets NaN."""
        if self.speaker_boxes is None:
            return self
        cells = _latent_cells(self.rounded_size)
        inside = [{c for c in cells if _contains(box, c)} for box in self.speaker_boxes]
        for index, covered in enumerate(inside, start=1):
            if not covered:
                raise InputError("speaker_boxes", f"box {index} is too small: it must cover at least one 16x16-pixel cell of the {self.rounded_size[0]}x{self.rounded_size[1]} output.")
        if not cells - inside[0] - inside[1]:
            raise InputError("speaker_boxes", "the two boxes cover the whole picture; leave some background outside them.")
        return self

    @model_validator(mode="after")
    def _check_video_steps(self) -> "JobRequest":
        if self.input_type == "video" and self.steps is not None and self.steps < V2V_MIN_STEPS:
            raise InputError("steps", f"must be at least {V2V_MIN_STEPS} for video input (re-sampling a video starts at step 2).")
        return self

    @model_validator(mode="after")
    def _check_sources(self) -> "JobRequest":
        for slot in self.needed_slots():
            given = self.sources_given(slot)
            if not given:
                keys = ", ".join(SLOTS[slot][:2]) + " or " + SLOTS[slot][2]
                raise InputError(SLOTS[slot][0], f"one of {keys} is required{self._why_needed(slot)}.")
        for slot in SLOTS:
            given = self.sources_given(slot)
            if len(given) > 1:
                raise InputError(given[0], f"give exactly one of {', '.join(SLOTS[slot])}, not {' and '.join(given)}.")
        return self

    def _why_needed(self, slot: str) -> str:
        if slot in ("image", "video"):
            return f" when input_type is {self.input_type!r}"
        if slot == "audio_2":
            return " when person_count is 'multi'"
        return ""

    def needed_slots(self) -> list[str]:
        """The media slots this kind of job reads, in a stable order."""
        slots = ["image" if self.input_type == "image" else "video", "audio_1"]
        if self.person_count == "multi":
            slots.append("audio_2")
        return slots

    def sources_given(self, slot: str) -> list[str]:
        return [key for key in SLOTS[slot] if getattr(self, key)]

    def source_of(self, slot: str) -> tuple[str, str]:
        """(key, value) of the one source given for a slot."""
        key = self.sources_given(slot)[0]
        return key, getattr(self, key)

    @property
    def kind(self) -> tuple[str, str]:
        return (self.input_type, self.person_count)

    @property
    def rounded_size(self) -> tuple[int, int]:
        """Width and height rounded to the model's 16-pixel grid."""
        return _round16(self.width), _round16(self.height)

    @property
    def explicit_fields(self) -> set[str]:
        """Fields the caller set, as opposed to defaults: only these must find a place in the graph."""
        return set(self.model_fields_set)

    def warnings(self) -> list[str]:
        """Keys the worker ignores, so a misspelt key never passes unnoticed (bounded, whatever is sent)."""
        unknown = sorted(self.model_extra or {})
        notes = [f"Unknown key {_shown(key)} was ignored." for key in unknown[:MAX_LISTED_KEYS]]
        if len(unknown) > MAX_LISTED_KEYS:
            notes.append(f"... and {len(unknown) - MAX_LISTED_KEYS} more unknown keys were ignored.")
        for slot in SLOTS:
            if slot not in self.needed_slots():
                notes += [f"{key} was ignored: this job does not use a {slot} input." for key in self.sources_given(slot)]
        if self.person_count == "single":
            multi_only = sorted({"multi_audio_type", "speaker_boxes"} & self.model_fields_set)
            notes += [f"{key} was ignored: it applies to two-speaker jobs only." for key in multi_only]
        return notes


def _latent_cells(size: tuple[int, int]) -> set[tuple[float, float]]:
    """Centres of the model's 16x16-pixel cells, in 0..1 picture coordinates."""
    columns, rows = size[0] // SIZE_MULTIPLE, size[1] // SIZE_MULTIPLE
    return {((i + 0.5) / columns, (j + 0.5) / rows) for i in range(columns) for j in range(rows)}


def _contains(box: Box, point: tuple[float, float]) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= point[0] < x1 and y0 <= point[1] < y1


def _shown(value: Any) -> str:
    """A value as it may appear in a message: quoted, and cut short so an error never echoes megabytes."""
    text = repr(value) if not isinstance(value, float) else f"{value:g}"
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 4] + "...'"


def _round16(value: int) -> int:
    return max(SIZE_MULTIPLE, int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def parse_request(raw: Any, max_prompt_chars: int) -> JobRequest:
    """Validate a job input, turning pydantic's report into one sentence per field."""
    if not isinstance(raw, dict):
        raise InputError("input", "the job input must be a JSON object.")
    try:
        request = JobRequest.model_validate(raw)
    except InputError:
        raise
    except ValidationError as exc:
        raise InputError(*_describe(exc)) from None
    for name in ("prompt", "negative_prompt"):
        text = getattr(request, name) or ""
        if len(text) > max_prompt_chars:
            raise InputError(name, f"is {len(text)} characters long; the limit is {max_prompt_chars}.")
    return request


def _describe(exc: ValidationError) -> tuple[str, str]:
    """The field and sentence for every problem pydantic found, the first field leading."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "input"
        problems.append((field, _sentence(error)))
    field = problems[0][0]
    text = "; ".join(f"{f} {msg}" if i else msg for i, (f, msg) in enumerate(problems))
    return field, text


def _sentence(error: dict[str, Any]) -> str:
    kind, given = error["type"], error.get("input")
    message = error["msg"].replace("Input should", "must").replace("Value error, ", "")
    if kind == "literal_error":
        return f"{_shown(given)} is not allowed; it {message}."
    if kind.startswith(("greater_than", "less_than")):
        return f"{_shown(given)} is out of range; it {message}."
    if kind == "value_error":
        return message + "."
    return f"{message[0].lower()}{message[1:]} (got {type(given).__name__})."
