"""resolution: the output size from an area bucket in the shape of the input, as the hosted APIs make it."""

from __future__ import annotations

import random

import pytest

from infinitetalk_worker.constants import MAX_SIZE, MIN_SIZE
from infinitetalk_worker.sizing import ASPECT_TOLERANCE, BUCKET_AREAS, bucket_of, bucket_size


@pytest.mark.parametrize("resolution, source, expected", [
    ("480p", (1920, 1080), (848, 480)),
    ("480p", (1080, 1920), (480, 848)),
    ("480p", (512, 512), (640, 640)),
    ("720p", (1920, 1080), (1280, 720)),
    ("infinitetalk-720", (1000, 1000), (960, 960)),
    ("infinitetalk-480", (1920, 1080), (848, 480)),
])
def test_common_shapes_get_the_sizes_people_know(resolution, source, expected):
    choice = bucket_size(resolution, source, MIN_SIZE, MAX_SIZE)
    assert (choice.width, choice.height) == expected and choice.warning is None


@pytest.mark.parametrize("resolution", ["480p", "720p"])
def test_any_ordinary_shape_keeps_its_aspect_and_stays_within_the_bucket(resolution):
    rng = random.Random(7)
    for _ in range(300):
        source = (rng.randint(200, 4000), rng.randint(200, 4000))
        ratio = source[0] / source[1]
        if not 0.3 < ratio < 3.3:
            continue
        choice = bucket_size(resolution, source, MIN_SIZE, MAX_SIZE)
        assert choice.width % 16 == 0 and choice.height % 16 == 0
        assert choice.width * choice.height <= BUCKET_AREAS[resolution]
        assert abs(choice.width / choice.height - ratio) / ratio <= ASPECT_TOLERANCE
        # nothing larger in the same shape was passed over: one more row or column of 16 would not fit
        assert (choice.width + 16) * (choice.height + 16) > BUCKET_AREAS[resolution]


def test_a_panorama_beyond_the_size_limits_gets_the_closest_shape_and_says_so():
    choice = bucket_size("480p", (8000, 400), MIN_SIZE, MAX_SIZE)
    assert choice.height == MIN_SIZE and choice.width * choice.height <= BUCKET_AREAS["480p"]
    assert "8000x400" in choice.warning and f"{choice.width}x{choice.height}" in choice.warning


def test_an_explicit_size_is_placed_in_the_nearest_bucket():
    assert bucket_of(512, 512) == "480p" and bucket_of(832, 480) == "480p"
    assert bucket_of(1280, 720) == "720p" and bucket_of(960, 960) == "720p"
