"""Probing: images, audio and video proven from their bytes, whole, and within the limits.

Truncated files are made by cutting files that the real encoders (PyAV's FFmpeg, Pillow) wrote.
"""

from __future__ import annotations

import wave
from dataclasses import replace
from pathlib import Path

import av
import pytest
from PIL import Image

from infinitetalk_worker.config import Settings
from infinitetalk_worker.constants import MIN_AUDIO_SECONDS
from infinitetalk_worker.derived_media import make_soundtrack
from infinitetalk_worker.errors import InputError
from infinitetalk_worker.probe import check_image, probe_audio_track, probe_video
from testsupport.media_factory import make_encoded_audio, make_image, make_video, make_wav


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(job_root=tmp_path / "jobs")


def cut(path: Path, keep: float) -> Path:
    """The first ``keep`` of a file (a fraction, or a byte count), written beside it."""
    data = path.read_bytes()
    size = keep if isinstance(keep, int) else int(len(data) * keep)
    target = path.with_name(f"cut-{keep}-{path.name}")
    target.write_bytes(data[:size])
    return target


def seconds(track: tuple[int, int]) -> float:
    samples, rate = track
    return samples / rate


# -- images ----------------------------------------------------------------------------------------


def test_image_check_reads_size_and_refuses_other_content(settings, tmp_path):
    assert check_image(make_image(tmp_path / "a.jpg", (80, 60), "JPEG"), "image_path", settings) == (80, 60)
    with pytest.raises(InputError, match="image_base64: the data is not a readable image"):
        check_image(make_wav(tmp_path / "voice.wav"), "image_base64", settings)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
@pytest.mark.parametrize("keep", [0.97, 0.5, 0.05])
def test_truncated_image_is_refused_as_truncated(settings, tmp_path, fmt, keep):
    whole = make_image(tmp_path / f"a.{fmt.lower()}", (256, 256), fmt)
    with pytest.raises(InputError, match=r"^image_base64: the image file is truncated: .*; send the whole file\.$"):
        check_image(cut(whole, keep), "image_base64", settings)


def test_decompression_bomb_is_refused_from_the_header(settings, tmp_path):
    Image.new("1", (6000, 6000)).save(tmp_path / "bomb.png")
    with pytest.raises(InputError, match="over the limit of 1000000 pixels"):
        check_image(tmp_path / "bomb.png", "image_path", replace(settings, max_image_pixels=1_000_000))


# -- audio -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "codec,container,suffix", [("libmp3lame", "mp3", "mp3"), ("aac", "ipod", "m4a"), ("flac", "flac", "flac"),
                               ("libopus", "ogg", "ogg")]
)
def test_compressed_audio_formats_are_probed_for_their_length(settings, tmp_path, codec, container, suffix):
    path = make_encoded_audio(tmp_path / f"voice.{suffix}", 1.5, codec, container)
    assert seconds(probe_audio_track(path, "wav_path", settings)) == pytest.approx(1.5, abs=0.1)


def test_wav_length_is_exact(settings, tmp_path):
    assert probe_audio_track(make_wav(tmp_path / "v.wav", 2.0, rate=22050), "wav_path", settings) == (44100, 22050)


WAV_KINDS = [("pcm_s24le", {}), ("pcm_f32le", {}), ("adpcm_ms", {}), ("libmp3lame", {}),
             ("pcm_s16le", {"rf64": "always"})]


@pytest.mark.parametrize("codec,options", WAV_KINDS, ids=["s24", "f32", "adpcm", "mp3-in-wav", "rf64"])
def test_every_kind_of_wav_is_probed_and_mixed_at_its_decoded_length(settings, tmp_path, codec, options):
    """The WAV probe is cut short (FFmpeg would read 5 MB for nothing); lengths stay those of a full decode."""
    path = make_encoded_audio(tmp_path / "voice.wav", 1.3, codec, "wav", rate=22050, options=options)
    with av.open(str(path)) as container:  # FFmpeg's own defaults
        decoded = sum(frame.samples for frame in container.decode(audio=0))
    assert probe_audio_track(path, "wav_path", settings) == (decoded, 22050)
    with wave.open(str(make_soundtrack([path], "para", tmp_path / "soundtrack.wav"))) as track:
        assert track.getnframes() == pytest.approx(decoded * 48000 / 22050, abs=48)


def test_audio_over_the_length_limit_is_refused(settings, tmp_path):
    with pytest.raises(InputError, match="wav_path: the audio is longer than the 1-second limit"):
        probe_audio_track(make_wav(tmp_path / "v.wav", 2.0), "wav_path", replace(settings, max_audio_seconds=1.0))


def test_an_image_is_not_audio(settings, tmp_path):
    with pytest.raises(InputError, match="wav_base64: the data is not"):
        probe_audio_track(make_image(tmp_path / "a.png"), "wav_base64", settings)


def test_a_wav_cut_to_its_first_150_bytes_is_truncated_not_a_3_ms_voice(settings, tmp_path):
    """What a Base64 WAV cut to 200 characters decodes to: the header promises a second of samples."""
    whole = make_wav(tmp_path / "voice.wav", 1.0)
    with pytest.raises(InputError, match=r"^wav_base64: the audio file is truncated: its header promises 32044 "
                                         r"bytes but it holds 150; send the whole file\.$"):
        probe_audio_track(cut(whole, 150), "wav_base64", settings)


@pytest.mark.parametrize("keep", [0.9, 0.5, 30])
def test_truncated_wav_is_refused(settings, tmp_path, keep):
    with pytest.raises(InputError, match="^wav_path: the audio file is truncated"):
        probe_audio_track(cut(make_wav(tmp_path / "voice.wav", 1.0), keep), "wav_path", settings)


@pytest.mark.parametrize("size_field", [0xFFFFFFFF, 0])
def test_a_streamed_wav_without_sizes_is_accepted_at_its_real_length(settings, tmp_path, size_field):
    """Encoders writing to a pipe cannot go back to fill in the sizes; such a WAV is whole."""
    data = bytearray(make_wav(tmp_path / "voice.wav", 1.0).read_bytes())
    data[4:8] = data[40:44] = size_field.to_bytes(4, "little")
    (tmp_path / "streamed.wav").write_bytes(data)
    assert probe_audio_track(tmp_path / "streamed.wav", "wav_path", settings) == (16000, 16000)


@pytest.mark.parametrize("keep", [0.9, 0.5])
def test_truncated_mp3_is_refused(settings, tmp_path, keep):
    """LAME writes the frame count in the first frame; a cut file decodes to less than it promises."""
    whole = make_encoded_audio(tmp_path / "voice.mp3", 1.0, "libmp3lame", "mp3")
    with pytest.raises(InputError, match=r"^wav_url: the audio file is truncated: its header promises 1\.00 s"):
        probe_audio_track(cut(whole, keep), "wav_url", settings)


@pytest.mark.parametrize("codec,container,suffix", [("aac", "ipod", "m4a"), ("flac", "flac", "flac"),
                                                    ("libopus", "ogg", "ogg")])
def test_other_truncated_compressed_audio_is_refused_as_cut_short(settings, tmp_path, codec, container, suffix):
    whole = make_encoded_audio(tmp_path / f"voice.{suffix}", 1.0, codec, container)
    with pytest.raises(InputError, match=r"^wav_base64: the audio file is (truncated|damaged or cut short)"):
        probe_audio_track(cut(whole, 0.7), "wav_base64", settings)


def test_audio_shorter_than_the_minimum_is_refused(settings, tmp_path):
    short = make_wav(tmp_path / "blip.wav", MIN_AUDIO_SECONDS / 2)
    with pytest.raises(InputError, match=r"^wav_path_2: the audio is 0\.100 s long; at least 0\.2 s "
                                         r"\(5 frames at 25 fps\) is needed\.$"):
        probe_audio_track(short, "wav_path_2", settings)
    assert seconds(probe_audio_track(make_wav(tmp_path / "ok.wav", MIN_AUDIO_SECONDS), "wav_path", settings)) \
        == pytest.approx(MIN_AUDIO_SECONDS)


# -- video -----------------------------------------------------------------------------------------


def test_video_is_probed_and_a_still_image_is_not_a_video(settings, tmp_path):
    probed = probe_video(make_video(tmp_path / "clip.mp4", 1.0, (96, 64)), "video_path", settings)
    assert probed.seconds == pytest.approx(1.0, abs=0.1) and probed.size == (96, 64)
    with pytest.raises(InputError, match="video_path: the data is not a video"):
        probe_video(make_image(tmp_path / "still.png"), "video_path", settings)


@pytest.mark.parametrize("faststart", [False, True], ids=["index-last", "index-first"])
@pytest.mark.parametrize("keep", [0.97, 0.6, 200])
def test_truncated_mp4_is_refused(settings, tmp_path, faststart, keep):
    whole = make_video(tmp_path / "clip.mp4", 2.0, (64, 48), with_audio=True, faststart=faststart)
    assert probe_video(whole, "video_base64", settings).seconds == pytest.approx(2.0, abs=0.1)
    with pytest.raises(InputError, match=r"^video_base64: the video file is truncated: .*; send the whole file\.$"):
        probe_video(cut(whole, keep), "video_base64", settings)


@pytest.mark.parametrize("picture_s,sound_s", [(1.0, 2.0), (2.0, 1.0)])
def test_tracks_of_different_lengths_are_whole_not_truncated(settings, tmp_path, picture_s, sound_s):
    """The container's duration is its longest track's; each track is judged by its own."""
    clip = make_video(tmp_path / "clip.mp4", picture_s, (64, 48), with_audio=True, audio_seconds=sound_s)
    assert probe_video(clip, "video_path", settings).seconds == pytest.approx(max(picture_s, sound_s), abs=0.1)
    assert seconds(probe_audio_track(clip, "wav_path", settings)) == pytest.approx(sound_s, abs=0.05)


def test_a_video_missing_frames_its_index_promises_is_refused(settings, tmp_path):
    """The box sizes can be whole while the frames are not: the index's frame count is checked too."""
    whole = make_video(tmp_path / "clip.mp4", 2.0, (64, 48), faststart=True)
    data = bytearray(whole.read_bytes())
    mdat = data.index(b"mdat") - 4
    kept = (len(data) - mdat) // 2
    data[mdat:mdat + 4] = kept.to_bytes(4, "big")  # a consistent box that holds only half the frames
    (tmp_path / "half.mp4").write_bytes(data[: mdat + kept])
    with pytest.raises(InputError, match=r"^video_path: the video file is truncated: its header promises 50 frames"):
        probe_video(tmp_path / "half.mp4", "video_path", settings)
