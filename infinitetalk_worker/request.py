"""The job input: the original worker's keys plus this project's additions, checked strictly.

Every violation becomes one English sentence naming the field, so a client sees exactly what to fix.
Keys nobody reads are kept and reported back as warnings instead of being silently dropped.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .constants import FPS, MAX_SIZE, MIN_SIZE, MULTI_ONLY_FIELDS, SIZE_MULTIPLE
from .errors import InputError, english_list, shown
from .presets import ACCELERATORS, DEFAULT_QUALITY, QUALITY
from .sizing import BUCKET_ALIASES, BUCKET_AREAS
from .speech import parse_dialogue

DEFAULT_PROMPT = "A person talking naturally"
MAX_FRAMES = 10000
MAX_SEED = 2**64 - 1
V2V_MIN_STEPS = 3
FRAME_WINDOW = 81  # the shipped workflows' frame_window_size; motion_frame must stay below it
COLORMATCH = ("disabled", "mkl", "hm", "reinhard", "mvgd", "hm-mvgd-hm", "hm-mkl-hm")  # the node lock's choices
MAX_LISTED_KEYS = 20
SIMILAR_KEY_CUTOFF = 0.75  # difflib ratio above which an unknown key is taken for a misspelling
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


def _two_boxes(value: Any) -> Any:
    """The shape first, so a wrong one reads as what to send rather than as pydantic's tuple positions."""
    if value == "auto":
        return value
    is_list = isinstance(value, (list, tuple))
    if value is not None and not (is_list and len(value) == 2 and all(
            isinstance(box, (list, tuple)) and len(box) == 4 for box in value)):
        raise ValueError('must be "auto" or two boxes, [[x0, y0, x1, y1], [x0, y0, x1, y1]]')
    return value


# Found in WanVideoWrapper 6b286552: masks steer a voice only when there are two (nodes_sampler.py passes
# human_num = len(audio_features); multitalk.py's audio cross-attention falls through to plain attention
# over the whole picture when human_num <= 1, so ref_target_masks then have no effect).
ONE_SPEAKER_REFUSAL = ("one speaker among several cannot be chosen: with one voice the pinned WanVideoWrapper "
                       "(6b286552) ignores the speaker masks and the voice drives the whole picture; give "
                       "person_count 'multi' with two voices and two boxes instead")
ORDERS = {"meanwhile": ("para", False), "left_right": ("add", False), "right_left": ("add", True)}


Flag = Annotated[
    bool,
    BeforeValidator(_boolean),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}]}),
]
Source = Annotated[str | None, BeforeValidator(_source)]
Number = Annotated[float, BeforeValidator(_number)]
Coordinate = Annotated[float, BeforeValidator(_number), WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})]
Box = tuple[Coordinate, Coordinate, Coordinate, Coordinate]


def _whole(low: int, high: int) -> Any:
    """A whole number in [low, high]; the range sits inside the validator so the JSON Schema shows it."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_integer)]


def _real(low: float, high: float) -> Any:
    return Annotated[float, Field(ge=low, le=high), BeforeValidator(_number)]


def _described(default: Any, description: str, shown_default: str | None = None) -> Any:
    """A field's default and meaning; ``shown_default`` is what the docs say when ``None`` stands for something."""
    extra = {"x-default": shown_default} if shown_default else None
    return Field(default, description=description, json_schema_extra=extra)


def _source_field(slot: str, form: str) -> Any:
    what, when = SLOT_TEXT[slot]
    return _described(None, f"{what}, {form}; exactly one of {english_list(SLOTS[slot])} is required {when}")


# What can stand in for a voice slot's audio: text the worker speaks (``speech``).
SPEECH_KEYS: dict[str, str] = {"audio_1": "text", "audio_2": "text_2"}
DEFAULT_VOICE, DEFAULT_VOICE_2 = "af_heart", "am_adam"
MIN_SPEED, MAX_SPEED = 0.5, 2.0


def _spoken(value: Any) -> Any:
    """Text to speak stays as sent: empty text is an error with its own message, not an absent key."""
    if value is not None and not isinstance(value, str):
        raise ValueError("must be a string")
    return value


Spoken = Annotated[str | None, BeforeValidator(_spoken)]


SLOT_TEXT = {
    "image": ("the portrait", "when input_type is 'image'"),
    "video": ("the source video", "when input_type is 'video'"),
    "audio_1": ("speech of speaker 1 (WAV, MP3, M4A/AAC, OGG/Opus, FLAC)", "for every job"),
    "audio_2": ("speech of speaker 2", "when person_count is 'multi'"),
}
AS_PATH = "as a file path inside ALLOWED_INPUT_ROOTS"
AS_URL = "as an http(s) URL of a public address"
AS_BASE64 = "as Base64, with or without a data: prefix"
WORKFLOWS_OWN = "the workflow's"


class JobRequest(BaseModel):
    """The job input (RunPod's ``input``): the original worker's keys and defaults, plus optional additions.

    Keys the worker does not know are accepted and listed back in the result's ``warnings``.
    """

    # This model is the request's documentation too: ``python -m infinitetalk_worker schema`` prints it as
    # JSON Schema and the README's request table is generated from it (infinitetalk_worker/schema.py).

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False, title="InfiniteTalk job input")

    input_type: Literal["image", "video"] = _described("image", "animate a still portrait, or re-voice a video")
    person_count: Literal["single", "multi"] = _described("single", "one voice, or two voices driving two people")
    image_path: Source = _source_field("image", AS_PATH)
    image_url: Source = _source_field("image", AS_URL)
    image_base64: Source = _source_field("image", AS_BASE64)
    video_path: Source = _source_field("video", AS_PATH)
    video_url: Source = _source_field("video", AS_URL)
    video_base64: Source = _source_field("video", AS_BASE64)
    wav_path: Source = _source_field("audio_1", AS_PATH)
    wav_url: Source = _source_field("audio_1", AS_URL)
    wav_base64: Source = _source_field("audio_1", AS_BASE64)
    wav_path_2: Source = _source_field("audio_2", AS_PATH)
    wav_url_2: Source = _source_field("audio_2", AS_URL)
    wav_base64_2: Source = _source_field("audio_2", AS_BASE64)
    text: Spoken = _described(
        None, "words for speaker 1 to say, spoken by the worker (Kokoro-82M) instead of wav_*; at most "
              "MAX_TEXT_CHARS characters")
    text_2: Spoken = _described(None, "words for speaker 2 to say instead of wav_*_2; two-speaker jobs only")
    dialogue: Spoken = _described(
        None, "both speakers' words in one text, each line after a marker (s1) or (s2); the lines follow one "
              "another, each speaker silent while the other talks; instead of text, text_2 and wav_*")
    voice: str = _described(DEFAULT_VOICE, "the voice that speaks text (or the (s1) lines); see Voices")
    voice_2: str = _described(DEFAULT_VOICE_2, "the voice that speaks text_2 (or the (s2) lines)")
    speed: _real(MIN_SPEED, MAX_SPEED) = _described(1.0, "speaking rate of the synthesized speech (1 = normal)")
    prompt: str = _described(DEFAULT_PROMPT, "what the scene shows; at most MAX_PROMPT_CHARS characters")
    negative_prompt: str | None = _described(
        None, "what to avoid (only has an effect when cfg is not 1)", WORKFLOWS_OWN)
    width: _whole(MIN_SIZE, MAX_SIZE) = _described(512, f"output width, rounded to a multiple of {SIZE_MULTIPLE}")
    height: _whole(MIN_SIZE, MAX_SIZE) = _described(512, f"output height, rounded to a multiple of {SIZE_MULTIPLE}")
    max_frame: _whole(1, MAX_FRAMES) | None = _described(None, f"cap on the number of frames ({FPS} per second)",
                                                         "from the audio")
    force_offload: Flag = _described(True, "move the model off the GPU after each job (frees VRAM; the next job "
                                     "reloads it)", shown_default="the memory profile's")
    network_volume: Flag = _described(False, "return video_path on the network volume instead of Base64")
    seed: _whole(0, MAX_SEED) | None = _described(
        None, "the same seed and inputs give the same video; always reported back", "random")
    steps: _whole(1, 100) | None = _described(
        None, f"sampler steps (at least {V2V_MIN_STEPS} for video input)", WORKFLOWS_OWN)
    cfg: _real(0.0, 30.0) | None = _described(None, "text guidance (1 = single pass, fastest)", WORKFLOWS_OWN)
    shift: _real(0.0, 100.0) | None = _described(None, "noise schedule shift", WORKFLOWS_OWN)
    audio_scale: _real(0.0, 10.0) | None = _described(None, "lip-sync strength", WORKFLOWS_OWN)
    multi_audio_type: Literal["para", "add"] = _described(
        "para", "two voices on one timeline (para) or speaker 2 after speaker 1 (add); two-speaker jobs only")
    speaker_boxes: Annotated[Literal["auto"] | tuple[Box, Box], BeforeValidator(_two_boxes)] = _described(
        "auto", "the region [x0, y0, x1, y1] each voice drives, in 0..1 of the picture, or auto: around the two "
        "largest faces found, speaker 1 the left one; two-speaker jobs only")
    order: Literal[tuple(ORDERS)] | None = _described(  # type: ignore[valid-type]
        None, "who speaks when: both at once (meanwhile), speaker 1 then 2 (left_right), speaker 2 then 1 "
        "(right_left); two-speaker jobs only", "from multi_audio_type")
    speaker: Any = _described(None, "not available: " + ONE_SPEAKER_REFUSAL.split(": ", 1)[1], "refused")
    resolution: Literal[tuple(BUCKET_AREAS) + tuple(BUCKET_ALIASES)] | None = _described(  # type: ignore[valid-type]
        None, "output size from an area bucket (640x640 / 960x960) in the input's aspect ratio; "
        "explicit width and height win", "width x height")
    quality: Literal[tuple(QUALITY)] = _described(  # type: ignore[valid-type]
        DEFAULT_QUALITY, "a preset of steps, cfg, shift, audio guidance and the distillation LoRA; "
        "explicit steps/cfg/shift/audio_cfg_scale override it")
    audio_cfg_scale: _real(0.0, 100.0) | None = _described(
        None, "audio guidance (only when cfg is not 1; each step then costs a third model pass)", WORKFLOWS_OWN)
    motion_frame: _whole(1, FRAME_WINDOW - 1) | None = _described(
        None, f"frames each {FRAME_WINDOW}-frame window carries over from the previous one", WORKFLOWS_OWN)
    colormatch: Literal[COLORMATCH] | None = _described(  # type: ignore[valid-type]
        None, "colour matching of each window to the reference, against drift in long videos", WORKFLOWS_OWN)
    acceleration: Literal[("none", *ACCELERATORS)] = _described(  # type: ignore[valid-type]
        "none", "a step cache that skips model passes whose input barely changed (WanVideoWrapper's cache nodes)")
    acceleration_threshold: _real(0.0, 1.0) | None = _described(
        None, "the step cache's threshold: higher skips more (magcache at most 0.3)", "the method's default")
    separate_vocals: Literal["auto"] | Flag = _described(
        "auto", "vocal separation (MelBandRoFormer) before the audio embedding; auto: on for uploaded audio, off "
        "when every voice is synthesized from text")
    output: Literal["base64", "volume", "s3"] | None = _described(
        None, "where the result goes (overrides network_volume)", "base64, or volume when network_volume is true")
    test: Flag = _described(False, "health probe: answers at once with readiness, runs nothing")

    @field_validator("text", "text_2", "dialogue")
    @classmethod
    def _clean_speech(cls, value: str | None) -> str | None:
        """Control characters are not words; they would only reach espeak-ng (tabs and newlines are kept)."""
        return None if value is None else CONTROL_CHARS.sub(" ", value)

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _clean_text(cls, value: str | None) -> str | None:
        """Control characters would end up in the text encoder; tabs and newlines are kept."""
        return None if value is None else CONTROL_CHARS.sub(" ", value).strip()

    @model_validator(mode="before")
    @classmethod
    def _refuse_one_region(cls, raw: Any) -> Any:
        """One box for a one-voice job asks for one speaker among many, which the pinned nodes cannot do."""
        boxes = raw.get("speaker_boxes") if isinstance(raw, dict) else None
        if isinstance(boxes, (list, tuple)) and len(boxes) == 1 and raw.get("person_count", "single") != "multi":
            raise InputError("speaker_boxes", ONE_SPEAKER_REFUSAL + ".")
        return raw

    @field_validator("speaker")
    @classmethod
    def _refuse_speaker(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(ONE_SPEAKER_REFUSAL)
        return None

    @field_validator("speaker_boxes")
    @classmethod
    def _check_boxes(cls, boxes: str | tuple[Box, Box]) -> str | tuple[Box, Box]:
        for index, (x0, y0, x1, y1) in enumerate(boxes if isinstance(boxes, tuple) else (), start=1):
            if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
                raise ValueError(f"box {index} must have coordinates between 0 and 1")
            if x0 >= x1 or y0 >= y1:
                raise ValueError(f"box {index} must be [x0, y0, x1, y1] with x0 < x1 and y0 < y1")
        return boxes

    @model_validator(mode="after")
    def _check_regions(self) -> JobRequest:
        if not self.size_from_input:  # otherwise once the input's shape gives the size (media)
            self.check_regions(self.rounded_size)
        return self

    def check_regions(self, size: tuple[int, int]) -> None:
        """Each region and the background must cover a latent cell (16x16 px), or attention gets NaN."""
        if isinstance(self.speaker_boxes, tuple):
            problem = region_problem(self.speaker_boxes, size)
            if problem:
                raise InputError("speaker_boxes", problem)

    @model_validator(mode="after")
    def _check_order(self) -> JobRequest:
        if self.order and "multi_audio_type" in self.model_fields_set and \
                ORDERS[self.order][0] != self.multi_audio_type:
            raise InputError("order", f"{self.order!r} contradicts multi_audio_type {self.multi_audio_type!r}; "
                                      f"{self.order!r} means multi_audio_type {ORDERS[self.order][0]!r}: give "
                                      "one of the two keys, or both agreeing.")
        return self

    @property
    def audio_mode(self) -> str:
        """How the two voices share the timeline, for the graph and the soundtrack: para or add."""
        return ORDERS[self.order][0] if self.order else self.multi_audio_type

    @property
    def voices_swapped(self) -> bool:
        """Whether speaker 2 speaks first (order right_left): the graph then takes voice 2 as its first voice."""
        return bool(self.order) and ORDERS[self.order][1]

    @model_validator(mode="after")
    def _check_size_keys(self) -> JobRequest:
        given = sorted({"width", "height"} & self.model_fields_set)
        if self.resolution and len(given) == 1:
            other = "height" if given[0] == "width" else "width"
            raise InputError(given[0], f"is given without {other}; with resolution give both width and height "
                                       "or neither.")
        return self

    @model_validator(mode="after")
    def _check_acceleration(self) -> JobRequest:
        if self.acceleration_threshold is None:
            return self
        if self.acceleration == "none":
            raise InputError("acceleration_threshold", "is given but acceleration is 'none'; choose one of "
                                                       f"{english_list(ACCELERATORS)}.")
        limit = ACCELERATORS[self.acceleration].max_threshold
        if self.acceleration_threshold > limit:
            raise InputError("acceleration_threshold", f"{self.acceleration_threshold:g} is out of range; "
                                                       f"{self.acceleration} takes at most {limit:g}.")
        return self

    @model_validator(mode="after")
    def _check_video_steps(self) -> JobRequest:
        if self.input_type == "video" and self.steps is not None and self.steps < V2V_MIN_STEPS:
            raise InputError("steps", f"must be at least {V2V_MIN_STEPS} for video input "
                                      "(re-sampling a video starts at step 2).")
        return self

    @model_validator(mode="after")
    def _check_speech(self) -> JobRequest:
        """Text and audio for one speaker, or a dialogue beside either, leave the voice ambiguous: refuse it."""
        for slot, key in SPEECH_KEYS.items():
            audio = self.sources_given(slot)
            if getattr(self, key) is not None and audio:
                raise InputError(key, f"give either {key} or {english_list(SLOTS[slot])}, not {key} and "
                                      f"{audio[0]}: one speaker has one voice.")
        if self.dialogue is not None:
            others = [key for key in ("text", "text_2") if getattr(self, key) is not None]
            others += self.sources_given("audio_1") + self.sources_given("audio_2")
            if others:
                raise InputError("dialogue", f"holds every speaker's words; remove {english_list(others, 'and')}.")
            parse_dialogue(self.dialogue, 2 if self.person_count == "multi" else 1)
            if self.person_count == "multi" and self.audio_mode == "add":
                key = "order" if self.order else "multi_audio_type"
                raise InputError(key, f"{getattr(self, key)!r} cannot be used with dialogue: the dialogue already "
                                      "places each line after the previous one; leave it out.")
        return self

    @model_validator(mode="after")
    def _check_sources(self) -> JobRequest:
        for slot in self.needed_slots():
            given = self.sources_given(slot)
            if not given and slot not in self.speech_slots():
                keys = english_list(SLOTS[slot])
                ending = self._misspelt(slot) or "."
                spoken = f", or {SPEECH_KEYS[slot]} (or dialogue) for the worker to speak" if slot in SPEECH_KEYS \
                    else ""
                raise InputError(SLOTS[slot][0], f"one of {keys} is required{self._why_needed(slot)}{spoken}{ending}")
        for slot in SLOTS:
            given = self.sources_given(slot)
            if len(given) > 1:
                raise InputError(given[0], f"give exactly one of {', '.join(SLOTS[slot])}, not {' and '.join(given)}.")
        return self

    def speech_slots(self) -> dict[str, str]:
        """The voice slots this job synthesizes, each with the key whose text it speaks."""
        needed = [slot for slot in self.needed_slots() if slot in SPEECH_KEYS]
        if self.dialogue is not None:
            return dict.fromkeys(needed, "dialogue")
        return {slot: SPEECH_KEYS[slot] for slot in needed if getattr(self, SPEECH_KEYS[slot]) is not None}

    @property
    def all_speech_synthesized(self) -> bool:
        """Every voice comes from text: no music or noise to separate from it."""
        voices = [slot for slot in self.needed_slots() if slot in SPEECH_KEYS]
        return set(self.speech_slots()) == set(voices)

    def _why_needed(self, slot: str) -> str:
        if slot in ("image", "video"):
            return f" when input_type is {self.input_type!r}"
        if slot == "audio_2":
            return " when person_count is 'multi'"
        return ""

    def _misspelt(self, slot: str) -> str:
        """Name an unknown key that looks like one of the slot's keys: the likely reason it is missing."""
        for key in self.unknown_keys()[:MAX_LISTED_KEYS]:
            match = similar_key(key, SLOTS[slot])
            if match:
                return f"; the unknown key {shown(key)} was ignored: did you mean {match}?"
        return ""

    def unknown_keys(self) -> list[str]:
        """Keys nobody reads, sorted so that messages and warnings are stable."""
        return sorted(str(key) for key in self.model_extra or {})

    @property
    def destination(self) -> tuple[str, str]:
        """Where the result was asked to go, and the key that asked, so an error can name what the user set."""
        if self.output:
            return self.output, "output"
        return ("volume", "network_volume") if self.network_volume else ("base64", "output")

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
    def size_from_input(self) -> bool:
        """Whether the output size comes from the resolution bucket and the input's shape (not width/height)."""
        return bool(self.resolution) and not {"width", "height"} <= self.model_fields_set

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
        unknown = self.unknown_keys()
        notes = [_unknown_note(key) for key in unknown[:MAX_LISTED_KEYS]]
        if len(unknown) > MAX_LISTED_KEYS:
            notes.append(f"... and {len(unknown) - MAX_LISTED_KEYS} more unknown keys were ignored.")
        for slot in SLOTS:
            if slot not in self.needed_slots():
                notes += [f"{key} was ignored: this job does not use a {slot} input."
                          for key in self.sources_given(slot)]
        if self.resolution and not self.size_from_input:
            notes.append(f"resolution {self.resolution} was not used: the explicit width and height win.")
        if self.person_count == "single":
            notes += [f"{key} was ignored: it applies to two-speaker jobs only."
                      for key in ("text_2", "voice_2") if key in self.model_fields_set]
        if not self.speech_slots():
            notes += [f"{key} was ignored: this job speaks no text." for key in ("voice", "voice_2", "speed")
                      if key in self.model_fields_set and not (key == "voice_2" and self.person_count == "single")]
        if self.person_count == "single":
            multi_only = sorted(MULTI_ONLY_FIELDS & self.model_fields_set)
            notes += [f"{key} was ignored: it applies to two-speaker jobs only." for key in multi_only]
        return notes


def region_problem(boxes: Sequence[Box], size: tuple[int, int]) -> str | None:
    """Why two regions cannot steer the model at this output size (a region or the background with no
    16x16-pixel cell), or None when they can."""
    cells = _latent_cells(size)
    inside = [{c for c in cells if _contains(box, c)} for box in boxes]
    for index, covered in enumerate(inside, start=1):
        if not covered:
            return (f"box {index} is too small: it must cover at least one 16x16-pixel cell of the "
                    f"{size[0]}x{size[1]} output.")
    if not cells - inside[0] - inside[1]:
        return "the two boxes cover the whole picture; leave some background outside them."
    return None


def _latent_cells(size: tuple[int, int]) -> set[tuple[float, float]]:
    """Centres of the model's 16x16-pixel cells, in 0..1 picture coordinates."""
    columns, rows = size[0] // SIZE_MULTIPLE, size[1] // SIZE_MULTIPLE
    return {((i + 0.5) / columns, (j + 0.5) / rows) for i in range(columns) for j in range(rows)}


def _contains(box: Box, point: tuple[float, float]) -> bool:
    x0, y0, x1, y1 = box
    return x0 <= point[0] < x1 and y0 <= point[1] < y1


def similar_key(key: str, known: Any) -> str | None:
    """The known key an unknown one is most probably a misspelling of (case and - vs _ ignored), if any."""
    by_folded = {name.lower(): name for name in known}
    folded = key.lower().replace("-", "_")
    if folded in by_folded:
        return by_folded[folded]
    matches = difflib.get_close_matches(folded, by_folded, n=1, cutoff=SIMILAR_KEY_CUTOFF)
    return by_folded[matches[0]] if matches else None


def _unknown_note(key: str) -> str:
    match = similar_key(key, JobRequest.model_fields)
    hint = f"; did you mean {match}?" if match else "."
    return f"Unknown key {shown(key)} was ignored{hint}"


def _round16(value: int) -> int:
    return max(SIZE_MULTIPLE, int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def parse_request(raw: Any, max_prompt_chars: int, max_text_chars: int | None = None) -> JobRequest:
    """Validate a job input, turning pydantic's report into one sentence per field.

    ``max_text_chars`` (MAX_TEXT_CHARS) bounds the text to speak here, before any input is fetched.
    """
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
    for name in ("text", "text_2", "dialogue"):
        text = getattr(request, name)
        if text is not None and not text.strip():
            raise InputError(name, "is empty; give the words to speak.")
        if text is not None and max_text_chars is not None and len(text) > max_text_chars:
            raise InputError(name, f"is {len(text)} characters long; the limit is {max_text_chars} (MAX_TEXT_CHARS).")
    return request


def _describe(exc: ValidationError) -> tuple[str, str]:
    """The field and sentence for every problem pydantic found, the first field leading."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "input"
        problems.append((field, _sentence(error)))
    field = problems[0][0]
    text = " ".join(msg if i == 0 else f"{f}: {msg}" for i, (f, msg) in enumerate(problems))
    return field, text


def _sentence(error: dict[str, Any]) -> str:
    kind, given = error["type"], error.get("input")
    message = error["msg"].replace("Input should", "must").replace("Value error, ", "")
    if kind == "literal_error":
        return f"{shown(given)} is not allowed; it {message}."
    if kind.startswith(("greater_than", "less_than")):
        return f"{shown(given)} is out of range; it {message}."
    if kind == "value_error":
        return message + "."
    return f"{message[0].lower()}{message[1:]} (got {type(given).__name__})."
