"""Text to speech: a request's ``text`` / ``text_2`` / ``dialogue`` spoken by Kokoro-82M into WAV files.

The synthesis runs in the worker, before ComfyUI, and writes ordinary WAV files into the job directory:
from there the speech goes through the same probing, limits and frame arithmetic as an uploaded WAV
(``media``). The engine (kokoro-onnx on onnxruntime: the GPU with the image's onnxruntime-gpu, else the CPU)
is loaded once per process and shared by every job; its model and voices files are the manifest's
``kokoro/kokoro-v1.0.onnx`` and ``kokoro/voices-v1.0.bin`` unless ``KOKORO_MODEL`` / ``KOKORO_VOICES``
name others.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .derived_media import write_wav
from .errors import InputError, WorkerError

if TYPE_CHECKING:  # the request imports nothing heavy; this module is only imported by media
    from .config import Settings
    from .request import JobRequest

log = logging.getLogger(__name__)

SAMPLE_RATE = 24000  # what Kokoro-82M makes
LANGUAGE = "en-us"  # espeak-ng's phonemes: the voices listed in the README are American and British English
TURN_GAP_S = 0.25  # silence between two dialogue lines, so one speaker's last word does not run into the next
MARKER = re.compile(r"\(\s*s\s*([0-9]+)\s*\)", re.IGNORECASE)
MODEL_FILE, VOICES_FILE, MODEL_FOLDER = "kokoro-v1.0.onnx", "voices-v1.0.bin", "kokoro"


class SpeechEngineError(WorkerError):
    """The engine's files are missing or unreadable: the worker's fault, not the request's."""


@dataclass
class Line:
    """One stretch of text and who speaks it (1 or 2)."""

    speaker: int
    text: str


@dataclass
class SpokenTrack:
    """One speaker's synthesized WAV and what the result reports about it."""

    slot: str
    key: str
    path: Path
    voice: str
    seconds: float
    lines: int = 1


@dataclass
class Speech:
    """Every synthesized track of a job and the time the synthesis took."""

    tracks: dict[str, SpokenTrack] = field(default_factory=dict)
    seconds_taken: float = 0.0

    def report(self) -> dict[str, Any]:
        """Per speaker the voice and the duration, for the result's ``speech`` key."""
        return {f"speaker_{track.slot[-1]}": {"source": track.key, "voice": track.voice,
                                              "duration_s": round(track.seconds, 3), "lines": track.lines}
                for track in self.tracks.values()}


# ---------------------------------------------------------------- the text


def check_text(key: str, text: str, max_chars: int) -> str:
    """The text as it will be spoken; empty text and text over MAX_TEXT_CHARS are the caller's errors."""
    if not text.strip():
        raise InputError(key, "is empty; give the words to speak.")
    if len(text) > max_chars:
        raise InputError(key, f"is {len(text)} characters long; the limit is {max_chars} (MAX_TEXT_CHARS).")
    return " ".join(text.split())


def parse_dialogue(text: str, speakers: int) -> list[Line]:
    """Split ``(s1) ... (s2) ...`` into lines; every marker needs words, every speaker at least one line."""
    if not MARKER.search(text):
        raise InputError("dialogue", "has no speaker marker; start each line with (s1) or (s2).")
    before, *rest = MARKER.split(text)
    if before.strip():
        raise InputError("dialogue", f"must start with a speaker marker, (s1) or (s2); it starts with "
                                     f"{before.strip()[:40]!r}.")
    lines = [Line(int(number), " ".join(words.split())) for number, words in zip(rest[::2], rest[1::2])]
    for index, line in enumerate(lines, start=1):
        if line.speaker not in (1, 2):
            raise InputError("dialogue", f"marker {index} is (s{line.speaker}); only (s1) and (s2) exist.")
        if line.speaker == 2 and speakers == 1:
            raise InputError("dialogue", "has a (s2) line but person_count is 'single'; set person_count to "
                                         "'multi' for two speakers.")
        if not line.text:
            raise InputError("dialogue", f"marker {index}, (s{line.speaker}), has no words after it.")
    for speaker in range(1, speakers + 1):
        if not any(line.speaker == speaker for line in lines):
            raise InputError("dialogue", f"has no (s{speaker}) line, so speaker {speaker} would say nothing; "
                                         f"give each of the {speakers} speakers at least one line.")
    return lines


# ---------------------------------------------------------------- the engine


class SpeechEngine:
    """Kokoro-82M in onnxruntime: one per process (``engine_for``), safe to share between jobs."""

    def __init__(self, model: Path, voices: Path) -> None:
        for path, what in ((model, "model"), (voices, "voices")):
            if not path.is_file():
                raise SpeechEngineError(f"The text-to-speech {what} file {path} is missing: run `python -m "
                                        "infinitetalk_worker download-models`, or set KOKORO_MODEL / KOKORO_VOICES.")
        import onnxruntime
        from kokoro_onnx import Kokoro

        started = time.monotonic()
        session = _session(onnxruntime, model)
        self.providers: list[str] = session.get_providers()  # what runs, after any fallback to the CPU
        self.device = "gpu" if self.providers[0] == CUDA else "cpu"
        self.kokoro = Kokoro.from_session(session, str(voices))
        self.voices = tuple(self.kokoro.get_voices())
        self._lock = threading.Lock()
        log.info("text to speech: %s loaded on %s in %.1f s (%d voices)", model.name, self.providers[0],
                 time.monotonic() - started, len(self.voices))

    def check_voice(self, key: str, voice: str) -> str:
        """Unknown voices are the caller's error, and the message lists what there is."""
        if voice not in self.voices:
            raise InputError(key, f"{voice!r} is not a voice of this worker; the voices are "
                                  f"{', '.join(self.voices)}.")
        return voice

    def speak(self, key: str, text: str, voice: str, speed: float) -> np.ndarray:
        """Mono float32 samples at SAMPLE_RATE; one synthesis at a time, as espeak-ng is process-global.

        kokoro-onnx refuses text it finds nothing to say in with ValueError: that is the text's fault.
        """
        try:
            with self._lock:
                audio, rate = self.kokoro.create(text, voice, speed=speed, lang=LANGUAGE)
        except ValueError as exc:
            raise InputError(key, f"cannot be spoken: {exc}.") from None
        if rate != SAMPLE_RATE:
            raise SpeechEngineError(f"The text-to-speech model made {rate} Hz audio; {SAMPLE_RATE} Hz was expected.")
        return np.asarray(audio, dtype=np.float32).ravel()


CUDA = "CUDAExecutionProvider"
#: the GPU memory arena grows by what is asked, not in powers of two (ComfyUI shares the card); cuDNN's
#: default algorithm choice instead of an exhaustive search on the first synthesis
CUDA_OPTIONS = {"arena_extend_strategy": "kSameAsRequested", "cudnn_conv_algo_search": "DEFAULT"}


def _providers(available: list[str]) -> list[str]:
    """The GPU when onnxruntime was built with CUDA, then the CPU."""
    return ([CUDA] if CUDA in available else []) + ["CPUExecutionProvider"]


def _session(onnxruntime: Any, model: Path) -> Any:
    """An onnxruntime session on the GPU when this is the CUDA build (the image's), else on the CPU.

    The worker process never imports torch, so the CUDA 12 and cuDNN 9 libraries of the nvidia-* wheels
    (torch's) are loaded with ``preload_dlls``; without a usable GPU onnxruntime falls back to the CPU
    itself and logs why.
    """
    providers: list[Any] = _providers(onnxruntime.get_available_providers())
    if providers[0] == CUDA:
        onnxruntime.preload_dlls()
        providers[0] = (CUDA, CUDA_OPTIONS)
    return onnxruntime.InferenceSession(str(model), providers=providers)


@functools.lru_cache(maxsize=2)
def _engine(model: Path, voices: Path) -> SpeechEngine:
    return SpeechEngine(model, voices)


def engine_for(settings: Settings) -> SpeechEngine:
    """The process's engine for these files, loaded on first use and kept (never per job)."""
    model, voices = engine_files(settings)
    return _engine(model, voices)


def warm_up(settings: Settings) -> SpeechEngine | None:
    """Load the engine at start when its files are there, so the first job that speaks does not wait for it.

    Without the files the worker still serves uploaded audio; the log says so now, and a job with text
    fails with a sentence naming the missing file.
    """
    missing = [path for path in engine_files(settings) if not path.is_file()]
    if missing:
        log.warning("text to speech unavailable: %s missing (python -m infinitetalk_worker download-models, or "
                    "KOKORO_MODEL / KOKORO_VOICES); jobs with text will fail.", ", ".join(map(str, missing)))
        return None
    return engine_for(settings)


def engine_files(settings: Settings) -> tuple[Path, Path]:
    """KOKORO_MODEL / KOKORO_VOICES, else the manifest's files in the first models folder that has them."""
    roots = [settings.volume_root / "models"] + ([settings.comfyui_dir / "models"] if settings.comfyui_dir else [])
    roots.append(Path("/comfyui/models"))

    def find(name: str) -> Path:
        candidates = [root / MODEL_FOLDER / name for root in roots]
        return next((path for path in candidates if path.is_file()), candidates[-1])

    return settings.kokoro_model_file or find(MODEL_FILE), settings.kokoro_voices_file or find(VOICES_FILE)


# ---------------------------------------------------------------- a job's speech


def synthesize(request: JobRequest, job_dir: Path, settings: Settings) -> Speech:
    """Every track the request asks to be spoken, as WAV files in ``job_dir`` (nothing when it asks none)."""
    wanted = request.speech_slots()
    if not wanted:
        return Speech()
    started = time.monotonic()
    engine = engine_for(settings)
    if request.dialogue is not None:
        tracks = _dialogue(request, engine, job_dir, settings)
    else:
        tracks = {slot: _monologue(slot, key, request, engine, job_dir, settings) for slot, key in wanted.items()}
    speech = Speech(tracks, time.monotonic() - started)
    log.info("text to speech: %s in %.2f s", ", ".join(f"{t.slot} {t.voice} {t.seconds:.2f} s"
                                                       for t in tracks.values()), speech.seconds_taken)
    return speech


def _monologue(slot: str, key: str, request: JobRequest, engine: SpeechEngine, job_dir: Path,
               settings: Settings) -> SpokenTrack:
    voice_key = "voice" if slot == "audio_1" else "voice_2"
    voice = engine.check_voice(voice_key, getattr(request, voice_key))
    text = check_text(key, getattr(request, key), settings.max_text_chars)
    audio = engine.speak(key, text, voice, request.speed)
    return _write(slot, key, voice, _checked_length(key, audio, settings), job_dir)


def _dialogue(request: JobRequest, engine: SpeechEngine, job_dir: Path, settings: Settings) -> dict[str, SpokenTrack]:
    """Each line after the previous one; the other speaker's track is silent meanwhile (one shared timeline)."""
    speakers = 2 if request.person_count == "multi" else 1
    voices = [engine.check_voice("voice", request.voice)]
    if speakers == 2:
        voices.append(engine.check_voice("voice_2", request.voice_2))
    lines = parse_dialogue(check_text("dialogue", request.dialogue, settings.max_text_chars), speakers)
    parts: list[list[np.ndarray]] = [[] for _ in range(speakers)]
    gap = np.zeros(round(TURN_GAP_S * SAMPLE_RATE), dtype=np.float32)
    for index, line in enumerate(lines):
        audio = engine.speak("dialogue", line.text, voices[line.speaker - 1], request.speed)
        if index:
            audio = np.concatenate([gap, audio])
        for speaker, track in enumerate(parts, start=1):
            track.append(audio if speaker == line.speaker else np.zeros_like(audio))
    tracks: dict[str, SpokenTrack] = {}
    for speaker, track in enumerate(parts, start=1):
        audio = _checked_length("dialogue", np.concatenate(track), settings)
        spoken = _write(f"audio_{speaker}", "dialogue", voices[speaker - 1], audio, job_dir)
        spoken.lines = sum(line.speaker == speaker for line in lines)
        tracks[spoken.slot] = spoken
    return tracks


def _checked_length(key: str, audio: np.ndarray, settings: Settings) -> np.ndarray:
    """Speech longer than MAX_AUDIO_SECONDS is refused like a long upload, naming the text that made it."""
    seconds = len(audio) / SAMPLE_RATE
    if seconds > settings.max_audio_seconds:
        raise InputError(key, f"makes {seconds:.1f} s of speech; the limit is {settings.max_audio_seconds:g} s "
                              "(MAX_AUDIO_SECONDS): shorten the text or raise the speed.")
    return audio


def _write(slot: str, key: str, voice: str, audio: np.ndarray, job_dir: Path) -> SpokenTrack:
    """16-bit mono WAV: the format an upload would most likely be, read back by the usual probe."""
    path = write_wav(job_dir / f"{slot}-speech.wav", audio, SAMPLE_RATE)
    return SpokenTrack(slot, key, path, voice, len(audio) / SAMPLE_RATE)
