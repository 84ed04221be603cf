"""Faces and speaker regions on real photographs (tests/data/faces, SOURCES.md there): the real detector.

What a user sees: the masks the graph reads lie over the real faces, the result says where the regions
came from, and a picture where that is impossible gets the halves with a warning saying so.
"""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from infinitetalk_worker.config import Settings
from infinitetalk_worker.derived_media import DEFAULT_SPEAKER_BOXES
from infinitetalk_worker.faces import faces_in_video, find_faces
from infinitetalk_worker.media import prepare_media
from infinitetalk_worker.request import parse_request
from infinitetalk_worker.speakers import regions_from_faces, speaker_faces_over_clip
from testsupport.media_factory import make_wav

PHOTOS = Path(__file__).parent / "data" / "faces"
TRUTH = json.loads((PHOTOS / "ground_truth.json").read_text())["faces"]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def centre(box) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def inside(point, box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def covers(region, face) -> bool:
    return region[0] <= face[0] and region[1] <= face[1] and region[2] >= face[2] and region[3] >= face[3]


def photo(name: str) -> Image.Image:
    return Image.open(PHOTOS / name).convert("RGB")


# ---------------------------------------------------------------- the detector against the hand-drawn truth


@pytest.mark.parametrize("name", sorted(TRUTH))
def test_every_face_is_found_where_it_was_drawn_by_hand_and_nothing_else(name):
    found = find_faces(photo(name))
    assert len(found) == len(TRUTH[name]), found
    for truth, box in zip(sorted(TRUTH[name]), found, strict=True):  # both left to right
        assert iou(truth, box) >= 0.5, (truth, box)


def test_a_two_megapixel_photograph_still_gives_both_faces():
    # its speed is measured by bench/faces.py, not here
    assert len(find_faces(photo("two_people.jpg").resize((1920, 1080)))) == 2


# ---------------------------------------------------------------- regions from faces


@pytest.mark.parametrize("name", ["two_people.jpg", "two_off_centre.jpg", "two_at_border.jpg", "three_people.jpg"])
def test_regions_cover_the_two_largest_faces_inside_the_picture_without_overlap(name):
    faces = TRUTH[name]
    first, second = regions_from_faces(find_faces(photo(name)))
    largest = sorted(sorted(faces, key=lambda f: (f[2] - f[0]) * (f[3] - f[1]))[-2:])
    assert covers(first, largest[0]) or iou(first, largest[0]) > 0  # grown around the face
    assert inside(centre(largest[0]), first) and inside(centre(largest[1]), second)
    assert not inside(centre(largest[0]), second) and not inside(centre(largest[1]), first)
    assert min(first[2], second[2]) <= max(first[0], second[0])  # side by side, never overlapping
    assert all(0.0 <= v <= 1.0 for v in (*first, *second))
    for other in faces:
        if other not in largest:  # the third person is background: no voice drives them
            assert not inside(centre(other), first) and not inside(centre(other), second)


def test_a_face_at_the_border_gets_a_region_clipped_to_the_picture():
    _, right = regions_from_faces(find_faces(photo("two_at_border.jpg")))
    assert right[2] == 1.0 and right[0] < TRUTH["two_at_border.jpg"][1][0]


def test_faces_one_above_the_other_are_cut_between_them():
    upper, lower = (0.4, 0.05, 0.6, 0.3), (0.42, 0.45, 0.62, 0.7)
    first, second = regions_from_faces([upper, lower])
    regions = sorted([first, second], key=lambda r: r[1])
    assert regions[0][3] <= regions[1][1]
    assert inside(centre(upper), regions[0]) and inside(centre(lower), regions[1])


# ---------------------------------------------------------------- the job's masks (prepare_media)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "jobs").mkdir()
    return Settings(job_root=tmp_path / "jobs", allowed_input_roots=[PHOTOS, tmp_path])


@pytest.fixture
def voices(tmp_path: Path) -> tuple[str, str]:
    return str(make_wav(tmp_path / "one.wav", 1.0)), str(make_wav(tmp_path / "two.wav", 0.6, frequency=330))


def prepare(settings, tmp_path, voices, source: dict, **extra):
    raw = {"person_count": "multi", "wav_path": voices[0], "wav_path_2": voices[1], **source, **extra}
    job_dir = tmp_path / f"job-{time.monotonic_ns()}"
    job_dir.mkdir()
    return prepare_media(parse_request(raw, 2000), job_dir, settings)


def mask_at(path: Path, point: tuple[float, float]) -> int:
    mask = np.asarray(Image.open(path).convert("L"))
    return int(mask[int(point[1] * mask.shape[0]), int(point[0] * mask.shape[1])])


def test_two_people_away_from_the_halves_get_masks_over_their_real_faces(settings, tmp_path, voices):
    # Biden's face is at x 37-45 %: the default right half (55-95 %) would miss him altogether.
    name = "two_off_centre.jpg"
    media = prepare(settings, tmp_path, voices, {"image_path": str(PHOTOS / name)}, width=960, height=288)
    one, two = (centre(face) for face in TRUTH[name])
    assert not inside(two, DEFAULT_SPEAKER_BOXES[1])
    assert media.speakers.source == "auto" and media.speakers.warning is None
    assert mask_at(media.files["speaker_mask_1"], one) == 255 and mask_at(media.files["speaker_mask_1"], two) == 0
    assert mask_at(media.files["speaker_mask_2"], two) == 255 and mask_at(media.files["speaker_mask_2"], one) == 0
    assert mask_at(media.files["speaker_mask_background"], (0.8, 0.5)) == 255  # the coffee cup is background
    assert media.notes == []


@pytest.mark.parametrize("name, found", [("coffee.jpg", "no face"), ("astronaut.jpg", "only one face"),
                                         ("chelsea.jpg", "no face")])
def test_fewer_than_two_faces_fall_back_to_the_halves_and_say_so(settings, tmp_path, voices, name, found):
    media = prepare(settings, tmp_path, voices, {"image_path": str(PHOTOS / name)})
    assert media.speakers.source == "default"
    assert media.speakers.boxes == DEFAULT_SPEAKER_BOXES
    assert media.notes == [f"speaker_boxes auto: found {found} in the picture, so voice 1 drives the left half and "
                           "voice 2 the right half (x 5-45 % and 55-95 %); give speaker_boxes to place the speakers "
                           "yourself."]


def test_the_requests_boxes_win_over_the_faces(settings, tmp_path, voices):
    boxes = [[0.0, 0.0, 0.3, 0.5], [0.6, 0.2, 1.0, 0.9]]
    media = prepare(settings, tmp_path, voices, {"image_path": str(PHOTOS / "two_people.jpg")}, speaker_boxes=boxes)
    assert media.speakers.source == "request" and media.speakers.reported() == boxes


def test_faces_are_found_in_the_picture_as_the_output_crops_it(settings, tmp_path, voices):
    # Square output of a wide picture: the centre crop cuts both faces in half, so none is found.
    media = prepare(settings, tmp_path, voices, {"image_path": str(PHOTOS / "two_people.jpg")}, width=368, height=368)
    assert media.speakers.source == "default"
    assert "found only one face in the picture" in media.notes[0] or "found no face" in media.notes[0]


def test_right_left_swaps_the_voices_regions_and_soundtrack(settings, tmp_path, voices):
    name = "two_people.jpg"
    source = {"image_path": str(PHOTOS / name)}
    plain = prepare(settings, tmp_path, voices, source, width=640, height=368, order="left_right")
    swapped = prepare(settings, tmp_path, voices, source, width=640, height=368, order="right_left")
    left, right = (centre(face) for face in TRUTH[name])
    assert str(plain.files["audio_1"]).endswith("one.wav") and str(swapped.files["audio_1"]).endswith("two.wav")
    assert mask_at(swapped.files["speaker_mask_1"], right) == 255 and mask_at(swapped.files["speaker_mask_2"], left)
    assert swapped.speakers.reported() == plain.speakers.reported()  # reported as speaker 1, speaker 2
    first_second = _soundtrack_onset(swapped.files["soundtrack"])
    assert first_second == pytest.approx(0.6, abs=0.02)  # voice 2 (0.6 s) first, then voice 1 starts


def _soundtrack_onset(path: Path) -> float:
    """When the second voice starts: the frequency changes from 330 Hz to 220 Hz there."""
    with av.open(str(path)) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        rate = container.streams.audio[0].rate
    mono = samples.reshape(-1, 2)[:, 0] if samples.size % 2 == 0 else samples
    window = rate // 50
    starts = range(0, len(mono) - window, window)
    crossings = [np.count_nonzero(np.diff(np.sign(mono[s:s + window]))) / 2 / (window / rate) for s in starts]
    first_low = next(i for i, hz in enumerate(crossings) if hz < 275)
    return first_low * window / rate


# ---------------------------------------------------------------- video: the face moves


def make_panning_clip(path: Path, frames: int = 25, shift: int = 112) -> None:
    """A real photograph filmed by a panning camera: a 560x352 window slides 112 px across three_people.jpg,
    keeping the two left faces in view (the third stays out of it)."""
    picture = photo("three_people.jpg")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 560, 352, "yuv420p"
        for i in range(frames):
            x = round(shift * i / (frames - 1))
            frame = av.VideoFrame.from_image(picture.crop((x, 0, x + 560, 352)))
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_a_moving_face_is_covered_over_the_whole_clip_not_only_in_frame_0(tmp_path):
    clip = tmp_path / "pan.mp4"
    make_panning_clip(clip)
    per_frame = faces_in_video(clip, (560, 352))
    assert len(per_frame) == 8 and all(len(faces) == 2 for faces in per_frame)
    first_frame, last_frame = per_frame[0], per_frame[-1]
    assert first_frame[0][0] - last_frame[0][0] > 0.15  # the faces travel a fifth of the picture
    regions = regions_from_faces(speaker_faces_over_clip(per_frame))
    for faces in (first_frame, last_frame):
        for region, face in zip(regions, faces, strict=True):
            assert inside(centre(face), region)
    frame_0_only = regions_from_faces(first_frame)
    assert not inside(centre(last_frame[0]), frame_0_only[0])  # one frame's faces would lose the speaker


def test_a_v2v_job_reports_the_regions_over_the_clip(settings, tmp_path, voices):
    clip = tmp_path / "pan.mp4"
    make_panning_clip(clip)
    media = prepare(settings, tmp_path, voices, {"input_type": "video", "video_path": str(clip)},
                    width=560, height=352)
    assert media.speakers.source == "auto"
    first, second = media.speakers.boxes
    assert first[2] <= second[0] and first[2] - first[0] > 0.4  # widened by the face's travel


def test_a_video_without_a_frame_count_in_its_header_is_still_sampled_over_the_clip(tmp_path):
    clip = tmp_path / "still.webm"
    picture = photo("two_people.jpg").resize((320, 184))
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libvpx", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 320, 184, "yuv420p"
        for _ in range(20):
            container.mux(stream.encode(av.VideoFrame.from_image(picture)))
        container.mux(stream.encode(None))
    with av.open(str(clip)) as container:
        assert container.streams.video[0].frames == 0
    assert [len(faces) for faces in faces_in_video(clip, (320, 176))] == [2] * 8


def test_only_the_frames_the_video_is_made_of_are_looked_at(tmp_path):
    clip = tmp_path / "pan.mp4"
    make_panning_clip(clip)
    start = faces_in_video(clip, (560, 352), frames=3)  # audio for 3 frames: the camera has hardly moved
    assert len(start) == 3 and all(len(faces) == 2 for faces in start)  # each of the 3 frames once
    assert start[0][0][0] - start[-1][0][0] < 0.03
