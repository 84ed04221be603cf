"""Media inputs: bring each image, video and audio into the job's directory and prove what it is.

A source is a path under an allowed root (``input_paths``), an http(s) URL on a public address
(``downloads``), or Base64 with or without a ``data:`` prefix (``base64_input``). Content is judged
from the bytes, never from a name or a MIME claim (``probe``), and every read is bounded in size and
time so no request can exhaust the disk, memory or clock. Every job also gets a soundtrack (the voices as
48 kHz stereo) and two-speaker jobs speaker masks (``derived_media``). This module puts those stages together.
"""

from __future__ import annotations

import contextvars
import errno
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .base64_input import decode_base64
from .config import Settings
from .constants import MAX_SIZE, MIN_SIZE
from .derived_media import make_soundtrack, make_speaker_masks
from .downloads import download_url
from .errors import InputError, WorkerError
from .frames import frame_count
from .input_paths import resolve_input_path
from .job_directory import job_directory
from .probe import check_image, probe_audio_track, probe_video, rename_by_content
from .request import JobRequest
from .sizing import bucket_size
from .speakers import SpeakerBoxes, choose_speaker_boxes
from .speech import Speech, synthesize

__all__ = ["PreparedMedia", "fetch_source", "job_directory", "prepare_media", "slot_kind"]


@dataclass
class PreparedMedia:
    """Files in the job directory (or under an allowed root) that the graph will read."""

    files: dict[str, Path] = field(default_factory=dict)
    audio_seconds: dict[str, float] = field(default_factory=dict)
    audio_tracks: dict[str, tuple[int, int]] = field(default_factory=dict)  # slot -> (samples, rate) decoded
    image_size: tuple[int, int] | None = None
    video_seconds: float | None = None
    video_size: tuple[int, int] | None = None
    output_size: tuple[int, int] = (0, 0)  # what the graph generates: width/height or the resolution bucket
    notes: list[str] = field(default_factory=list)  # warnings for the result (e.g. a size that had to bend)
    speakers: SpeakerBoxes | None = None  # two-speaker jobs: the regions as used and where they came from
    speech: Speech = field(default_factory=Speech)  # the voices the worker spoke from text, if any


def slot_kind(slot: str) -> str:
    return "audio" if slot.startswith("audio") else slot


def prepare_media(request: JobRequest, job_dir: Path, settings: Settings) -> PreparedMedia:
    """Fetch and check every input the job needs, then build the derived files (soundtrack, masks)."""
    try:
        return _prepare(request, job_dir, settings)
    except OSError as exc:  # the worker's own disk, not the request, failed
        hint = " (free disk space under JOB_ROOT or give the worker a larger disk)" if exc.errno == errno.ENOSPC else ""
        raise WorkerError(f"The worker could not write the job's input files: {exc.strerror or exc}{hint}.") from None


def _prepare(request: JobRequest, job_dir: Path, settings: Settings) -> PreparedMedia:
    media = PreparedMedia(speech=synthesize(request, job_dir, settings))  # first: a bad voice costs no download
    for slot in request.needed_slots():
        if slot in media.speech.tracks:  # spoken from text: from here on exactly like an uploaded WAV
            key, path = media.speech.tracks[slot].key, media.speech.tracks[slot].path
        else:
            key, value = request.source_of(slot)
            path = fetch_source(slot, key, value, job_dir, settings)
        _probe(slot, key, path, media, settings)
        media.files[slot] = rename_by_content(path, slot_kind(slot)) if path.parent == job_dir else path
    media.output_size = _output_size(request, media)
    if request.person_count == "multi":
        _prepare_speakers(request, media, job_dir)
    else:  # the upload's own rate can be low: AAC at 16 kHz overruns the picture by up to 0.25 s in VHS's mux
        media.files["soundtrack"] = make_soundtrack([media.files["audio_1"]], "para", job_dir / "soundtrack.wav")
    return media


def _prepare_speakers(request: JobRequest, media: PreparedMedia, job_dir: Path) -> None:
    """Regions, voices in speaking order, soundtrack and masks of a two-speaker job.

    With order right_left the graph's first voice is speaker 2's, so voice, region and soundtrack
    all swap together; the result still reports the boxes as speaker 1, speaker 2.
    """
    picture = media.files["image" if request.input_type == "image" else "video"]
    tracks = [media.audio_tracks[slot] for slot in ("audio_1", "audio_2")]
    frames = frame_count(tracks, request.audio_mode, request.max_frame, separated=False)  # +-1 frame: enough here
    if request.voices_swapped:
        media.files["audio_1"], media.files["audio_2"] = media.files["audio_2"], media.files["audio_1"]
        media.audio_tracks = {"audio_1": media.audio_tracks["audio_2"], "audio_2": media.audio_tracks["audio_1"]}
    # The soundtrack (both voices decoded, resampled, mixed) needs nothing of the regions: it is made on a
    # second thread while the faces are looked for (PyAV and OpenCV release the GIL).
    with ThreadPoolExecutor(1, thread_name_prefix="soundtrack") as pool:
        soundtrack = pool.submit(contextvars.copy_context().run, make_soundtrack,
                                 [media.files["audio_1"], media.files["audio_2"]], request.audio_mode,
                                 job_dir / "soundtrack.wav")
        media.speakers = choose_speaker_boxes(request, picture, media.output_size, frames)
        media.files["soundtrack"] = soundtrack.result()
    if media.speakers.warning:
        media.notes.append(media.speakers.warning)
    boxes = list(media.speakers.boxes)
    if request.voices_swapped:
        boxes.reverse()
    media.files.update(make_speaker_masks(boxes, media.output_size, job_dir))


def _output_size(request: JobRequest, media: PreparedMedia) -> tuple[int, int]:
    """The request's width/height, or its resolution bucket in the shape of the picture or video."""
    if not request.size_from_input:
        return request.rounded_size
    source = media.image_size if request.input_type == "image" else media.video_size
    assert source is not None and request.resolution is not None  # probed above; size_from_input needs it
    choice = bucket_size(request.resolution, source, MIN_SIZE, MAX_SIZE)
    if choice.warning:
        media.notes.append(choice.warning)
    request.check_regions((choice.width, choice.height))
    return choice.width, choice.height


def _probe(slot: str, key: str, path: Path, media: PreparedMedia, settings: Settings) -> None:
    kind = slot_kind(slot)
    if kind == "image":
        media.image_size = check_image(path, key, settings)
    elif kind == "video":
        media.video_seconds, media.video_size = probe_video(path, key, settings)
    else:
        samples, rate = probe_audio_track(path, key, settings)
        media.audio_tracks[slot] = (samples, rate)
        media.audio_seconds[slot] = samples / rate


def fetch_source(slot: str, key: str, value: str, job_dir: Path, settings: Settings) -> Path:
    """Return a local file holding the slot's bytes (renamed by content once probed)."""
    if key.endswith(("_path", "_path_2")):
        return resolve_input_path(key, value, settings)
    target = job_dir / f"{slot}.bin"
    if key.endswith(("_url", "_url_2")):
        download_url(key, value, target, settings)
    else:
        decode_base64(key, value, slot_kind(slot), target, settings)
    if target.stat().st_size == 0:
        raise InputError(key, "is empty.")
    return target
