"""Text to speech with a real Kokoro-82M (the int8 ONNX export the test packages ship), no stand-in.

What is asserted is what a listener would notice: there is speech (not silence), it lasts as long as
the words take a person to say, a faster speed is shorter, and a dialogue's two tracks take turns in
the order written without talking over each other.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from infinitetalk_worker import speech
from infinitetalk_worker.config import Settings
from infinitetalk_worker.errors import InputError
from infinitetalk_worker.request import parse_request
from infinitetalk_worker.speech import SAMPLE_RATE, engine_for, parse_dialogue, synthesize
from testsupport.kokoro_model import VOICES

SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays on."
MIN_WORDS_PER_S, MAX_WORDS_PER_S = 1.5, 4.5  # slow reading to fast talk
WINDOW = SAMPLE_RATE // 50  # 20 ms
LOUD = 0.02  # RMS above which a window counts as sound (the synthesized silence is 0)


@pytest.fixture
def settings(kokoro_files, tmp_path: Path) -> Settings:
    model, voices = kokoro_files
    return Settings(kokoro_model_file=model, kokoro_voices_file=voices, job_root=tmp_path / "jobs")


def request(settings: Settings, **keys):
    return parse_request({"image_path": "/face.png", **keys}, settings.max_prompt_chars, settings.max_text_chars)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as source:
        assert (source.getnchannels(), source.getframerate()) == (1, SAMPLE_RATE)
        return np.frombuffer(source.readframes(source.getnframes()), "<i2").astype(np.float32) / 32768


def loud_windows(audio: np.ndarray) -> np.ndarray:
    """Per 20 ms window: is something audible there?"""
    usable = len(audio) // WINDOW * WINDOW
    rms = np.sqrt((audio[:usable].reshape(-1, WINDOW) ** 2).mean(axis=1))
    return rms > LOUD


def test_a_sentence_becomes_speech_as_long_as_a_person_takes_to_say_it(settings, tmp_path):
    speech = synthesize(request(settings, text=SENTENCE, voice="jf_alpha"), tmp_path, settings)
    track = speech.tracks["audio_1"]
    audio = read_wav(track.path)
    assert track.seconds == pytest.approx(len(audio) / SAMPLE_RATE)
    assert loud_windows(audio).mean() > 0.4, "mostly sound, not silence"
    words_per_s = len(SENTENCE.split()) / track.seconds
    assert MIN_WORDS_PER_S <= words_per_s <= MAX_WORDS_PER_S, f"{words_per_s:.2f} words per second"
    assert speech.report() == {"speaker_1": {"source": "text", "voice": "jf_alpha",
                                             "duration_s": round(track.seconds, 3), "lines": 1}}
    assert speech.seconds_taken > 0


def test_speed_two_says_the_same_words_in_about_half_the_time(settings, tmp_path):
    normal = synthesize(request(settings, text=SENTENCE, voice="jm_kumo"), tmp_path, settings).tracks["audio_1"]
    fast = synthesize(request(settings, text=SENTENCE, voice="jm_kumo", speed=2.0), tmp_path, settings)
    assert 0.35 < fast.tracks["audio_1"].seconds / normal.seconds < 0.7


def test_the_engine_is_loaded_once_per_process(settings):
    first = engine_for(settings)
    assert engine_for(dataclasses.replace(settings, max_text_chars=10)) is first
    assert first.voices == VOICES
    assert first.providers == ["CPUExecutionProvider"] and first.device == "cpu"  # CI's onnxruntime: the CPU build


def test_the_gpu_comes_first_when_onnxruntime_is_the_cuda_build():
    assert speech._providers(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == \
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert speech._providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_an_unknown_voice_is_refused_with_the_list_of_voices(settings, tmp_path):
    with pytest.raises(InputError) as caught:
        synthesize(request(settings, text="Hello.", voice="af_nobody"), tmp_path, settings)
    assert str(caught.value) == ("voice: 'af_nobody' is not a voice of this worker; the voices are "
                                 f"{', '.join(VOICES)}.")
    with pytest.raises(InputError, match="^voice_2: 'zz' is not a voice"):
        synthesize(request(settings, person_count="multi", text="Hi.", text_2="Yo.", voice="jf_alpha",
                           voice_2="zz"), tmp_path, settings)


def test_speech_longer_than_max_audio_seconds_is_refused_naming_the_text(settings, tmp_path):
    short = dataclasses.replace(settings, max_audio_seconds=1.0)
    with pytest.raises(InputError, match=r"^text: makes \d+\.\d s of speech; the limit is 1 s \(MAX_AUDIO_SECONDS\)"):
        synthesize(request(short, text=SENTENCE, voice="jf_alpha"), tmp_path, short)


def test_a_dialogue_gives_two_tracks_taking_turns_in_the_written_order(settings, tmp_path):
    dialogue = "(s1) Good morning, how are you today? (s2) I am fine, thank you. (s1) Glad to hear it."
    speech = synthesize(request(settings, person_count="multi", dialogue=dialogue, voice="jf_alpha",
                                voice_2="jm_kumo"), tmp_path, settings)
    one, two = (read_wav(speech.tracks[slot].path) for slot in ("audio_1", "audio_2"))
    assert len(one) == len(two), "one shared timeline"
    loud_one, loud_two = loud_windows(one), loud_windows(two)
    assert not (loud_one & loud_two).any(), "nobody talks over the other"
    first_two, last_two = np.flatnonzero(loud_two)[[0, -1]]
    assert loud_one[:first_two].any() and loud_one[last_two:].any(), "s1, then s2, then s1 again"
    assert not loud_two[:first_two].any()
    assert speech.report()["speaker_1"] == {"source": "dialogue", "voice": "jf_alpha",
                                            "duration_s": round(len(one) / SAMPLE_RATE, 3), "lines": 2}
    assert speech.report()["speaker_2"]["lines"] == 1


def test_a_single_speaker_dialogue_speaks_its_s1_lines(settings, tmp_path):
    speech = synthesize(request(settings, dialogue="(s1) One line. (s1) And another.", voice="jf_alpha"),
                        tmp_path, settings)
    assert list(speech.tracks) == ["audio_1"] and speech.tracks["audio_1"].lines == 2


def test_a_job_without_text_speaks_nothing_and_loads_no_model(tmp_path):
    settings = Settings(kokoro_model_file=tmp_path / "absent.onnx", kokoro_voices_file=tmp_path / "absent.bin")
    speech = synthesize(request(settings, wav_path="/voice.wav"), tmp_path, settings)
    assert speech.tracks == {} and speech.report() == {}


def test_missing_engine_files_are_the_workers_error_naming_the_file(tmp_path):
    settings = Settings(kokoro_model_file=tmp_path / "absent.onnx", kokoro_voices_file=tmp_path / "absent.bin")
    with pytest.raises(Exception, match=r"text-to-speech model file .*absent\.onnx is missing.*download-models"):
        synthesize(request(settings, text="Hello."), tmp_path, settings)


# ---------------------------------------------------------------- the request's text (no model needed)


@pytest.mark.parametrize("keys, message", [
    ({"text": "Hi.", "wav_path": "/v.wav"}, "text: give either text or wav_path, wav_url or wav_base64, not text"),
    ({"person_count": "multi", "text": "Hi.", "text_2": "Yo.", "wav_url_2": "https://x/v.wav"},
     "text_2: give either text_2 or wav_path_2, wav_url_2 or wav_base64_2, not text_2 and wav_url_2"),
    ({"dialogue": "(s1) Hi. (s2) Yo."}, r"dialogue: has a \(s2\) line but person_count is 'single'"),
    ({"person_count": "multi", "dialogue": "(s1) Hi. (s1) Again."}, r"dialogue: has no \(s2\) line, so speaker 2"),
    ({"person_count": "multi", "dialogue": "(s1) Hi. (s2)  "}, r"dialogue: marker 2, \(s2\), has no words"),
    ({"dialogue": "Hello (s1) there"}, "dialogue: must start with a speaker marker"),
    ({"dialogue": "Hello there"}, "dialogue: has no speaker marker"),
    ({"dialogue": "(s3) Hello"}, r"dialogue: marker 1 is \(s3\); only \(s1\) and \(s2\) exist"),
    ({"dialogue": "(s1) Hi.", "text": "Hi."}, "dialogue: holds every speaker's words; remove text"),
    ({"person_count": "multi", "dialogue": "(s1) Hi. (s2) Yo.", "multi_audio_type": "add"},
     "multi_audio_type: 'add' cannot be used with dialogue"),
    ({"person_count": "multi", "dialogue": "(s1) Hi. (s2) Yo.", "order": "right_left"},
     "order: 'right_left' cannot be used with dialogue"),
    ({"text": " \n\t "}, "text: is empty; give the words to speak"),
    ({"text": ""}, "text: is empty"),
    ({"text": "\x00\x07"}, "text: is empty"),
    ({"text": "x" * 2001}, r"text: is 2001 characters long; the limit is 2000 \(MAX_TEXT_CHARS\)"),
    ({"text": "Hi.", "speed": 0.4}, "speed: 0.4 is out of range"),
    ({"text": "Hi.", "speed": 2.5}, "speed: 2.5 is out of range"),
    ({"person_count": "multi", "text": "Hi."}, "wav_path_2: one of wav_path_2, wav_url_2 or wav_base64_2 is "
                                               "required when person_count is 'multi', or text_2"),
])
def test_bad_text_requests_are_refused_naming_the_field(keys, message):
    with pytest.raises(InputError, match="^" + message):
        parse_request({"image_path": "/face.png", **keys}, 2000, 2000)


def test_markers_are_read_whatever_their_case_and_spacing():
    lines = parse_dialogue("(S1) Hello there.\n( s2 ) Hi!", 2)
    assert [(line.speaker, line.text) for line in lines] == [(1, "Hello there."), (2, "Hi!")]


def test_text_keys_a_job_does_not_use_are_listed_back():
    job = parse_request({"image_path": "/f.png", "text": "Hi.", "text_2": "Yo.", "voice_2": "am_adam"}, 100, 100)
    assert "text_2 was ignored: it applies to two-speaker jobs only." in job.warnings()
    job = parse_request({"image_path": "/f.png", "wav_path": "/v.wav", "voice": "af_heart"}, 100, 100)
    assert "voice was ignored: this job speaks no text." in job.warnings()


def test_auto_vocal_separation_is_off_only_when_every_voice_is_synthesized():
    spoken = parse_request({"image_path": "/f.png", "person_count": "multi", "text": "a", "text_2": "b"}, 99, 99)
    mixed = parse_request({"image_path": "/f.png", "person_count": "multi", "text": "a", "wav_path_2": "/v"}, 99, 99)
    assert spoken.all_speech_synthesized and not mixed.all_speech_synthesized


# ---------------------------------------------------------------- the example requests


TEXT_EXAMPLES = {"request_text_single.json": {"audio_1"}, "request_text_two.json": {"audio_1", "audio_2"},
                 "request_text_dialogue.json": {"audio_1", "audio_2"}}


@pytest.mark.parametrize("name, slots", TEXT_EXAMPLES.items())
def test_each_text_example_is_a_valid_job_that_speaks_every_voice(settings, tmp_path, name, slots):
    """The examples name the production voices; the test model has Japanese ones, so those stand in."""
    from infinitetalk_worker.config import REPO_ROOT
    from infinitetalk_worker.media import prepare_media

    job = json.loads((REPO_ROOT / "examples" / name).read_text())["input"]
    assert job["voice"] == "af_heart"
    job = {**job, "voice": "jf_alpha", "voice_2": "jm_kumo"}
    request = parse_request(job, settings.max_prompt_chars, settings.max_text_chars)
    media = prepare_media(request, tmp_path, settings)
    assert set(media.speech.tracks) == set(media.audio_seconds) == slots
    assert all(seconds >= 1.5 for seconds in media.audio_seconds.values())


def test_the_worker_loads_the_engine_at_start_and_says_when_it_cannot(settings, tmp_path, caplog):
    from infinitetalk_worker.speech import warm_up

    assert warm_up(settings) is engine_for(settings)
    absent = Settings(kokoro_model_file=tmp_path / "absent.onnx", kokoro_voices_file=settings.kokoro_voices_file)
    with caplog.at_level("WARNING"):
        assert warm_up(absent) is None
    assert "text to speech unavailable" in caplog.text and "absent.onnx" in caplog.text


GPU_BUILD_SCRIPT = """
import json, os, sys
from importlib import metadata
from pathlib import Path
import numpy as np
import onnxruntime
from infinitetalk_worker.speech import SpeechEngine
engine = SpeechEngine(Path(sys.argv[1]), Path(sys.argv[2]))
audio = engine.speak("text", sys.argv[3], sys.argv[4], 1.0)
print(json.dumps({"builds": [d.metadata["Name"] for d in metadata.distributions()
                             if d.metadata["Name"].startswith("onnxruntime")],
                  "available": onnxruntime.get_available_providers(), "providers": engine.providers,
                  "device": engine.device, "gpu": os.path.exists("/dev/nvidia0"),
                  "seconds": len(audio) / 24000, "peak": float(np.abs(audio).max()),
                  "nan": bool(np.isnan(audio).any())}))
"""


def test_the_images_onnxruntime_gpu_speaks_on_the_gpu_or_falls_back_to_the_cpu(kokoro_files):
    """Opt-in: ONNXRUNTIME_GPU_PYTHON is a Python with requirements.txt installed and, as in the image,
    onnxruntime-gpu 1.26.0 in place of onnxruntime (README, "The image lock")."""
    python = os.environ.get("ONNXRUNTIME_GPU_PYTHON")
    if not python:
        pytest.skip("set ONNXRUNTIME_GPU_PYTHON to a Python with the image's onnxruntime-gpu")
    model, voices = kokoro_files

    result = subprocess.run([python, "-c", GPU_BUILD_SCRIPT, str(model), str(voices), SENTENCE, "jf_alpha"],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})

    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["builds"] == ["onnxruntime-gpu"] and "CUDAExecutionProvider" in report["available"]
    expected = ["CUDAExecutionProvider", "CPUExecutionProvider"] if report["gpu"] else ["CPUExecutionProvider"]
    assert report["providers"] == expected and report["device"] == ("gpu" if report["gpu"] else "cpu")
    assert not report["nan"] and report["peak"] > LOUD and report["seconds"] > 2
