"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testsupport.fake_comfyui import FakeComfyUI

# -- fake ComfyUI ------------------------------------------------------------------------------


@pytest.fixture
def fake_comfy_object_info() -> Path | None:
    """The /object_info file the fake serves and validates against; override in a test module to change it."""
    return None  # shared/comfyui/object_info.json


@pytest.fixture
def fake_comfy(tmp_path: Path, fake_comfy_object_info: Path | None) -> Iterator[FakeComfyUI]:
    """A fake ComfyUI on 127.0.0.1 (free port) with its input/, output/ and temp/ under tmp_path/comfyui."""
    server = FakeComfyUI(tmp_path / "comfyui", object_info_path=fake_comfy_object_info)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- text to speech ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kokoro_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The real Kokoro-82M (int8 ONNX, from the test packages) and its voices: (model, voices)."""
    from testsupport.kokoro_model import model_files

    return model_files(tmp_path_factory.mktemp("kokoro"))
