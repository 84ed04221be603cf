"""``*_path`` inputs: used in place inside an allowed root, refused anywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from infinitetalk_worker.config import Settings
from infinitetalk_worker.errors import InputError
from infinitetalk_worker.input_paths import resolve_input_path
from testsupport.media_factory import make_image


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    return Settings(job_root=tmp_path / "jobs", allowed_input_roots=[inputs])


@pytest.fixture
def inputs(settings: Settings) -> Path:
    return settings.allowed_input_roots[0]


def test_path_inside_allowed_root_is_used_in_place(settings, inputs):
    image = make_image(inputs / "face.png")
    assert resolve_input_path("image_path", str(image), settings) == image.resolve()


@pytest.mark.parametrize("value", ["/etc/passwd", "../inputs/face.png", "inputs/../../etc/passwd"])
def test_path_outside_roots_or_with_dotdot_is_refused(settings, inputs, value):
    make_image(inputs / "face.png")
    with pytest.raises(InputError, match="^image_path: "):
        resolve_input_path("image_path", value, settings)


def test_symlink_leading_out_of_the_root_is_refused(settings, inputs, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    (inputs / "link.png").symlink_to(secret)
    with pytest.raises(InputError, match="outside the directories"):
        resolve_input_path("image_path", str(inputs / "link.png"), settings)


def test_missing_and_empty_files_are_named(settings, inputs):
    with pytest.raises(InputError, match="does not exist"):
        resolve_input_path("wav_path", str(inputs / "nope.wav"), settings)
    (inputs / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        resolve_input_path("wav_path", str(inputs / "empty.wav"), settings)
