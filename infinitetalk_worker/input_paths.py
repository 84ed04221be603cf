"""``*_path`` inputs: a file is used in place only when it lies inside an allowed root."""

from __future__ import annotations

from pathlib import Path

from .config import REPO_ROOT, Settings
from .errors import InputError, shown


def resolve_input_path(key: str, value: str, settings: Settings) -> Path:
    """A path is accepted only inside an allowed root, after resolving links, and must be a file."""
    raw = Path(value)
    if ".." in raw.parts:
        raise InputError(key, "must not contain '..'.")
    path = (raw if raw.is_absolute() else REPO_ROOT / raw).resolve()
    roots = [root.resolve() for root in settings.input_roots]
    if not any(path == root or root in path.parents for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise InputError(key, f"{shown(value)} is outside the directories inputs may come from ({allowed}).")
    if path.name.endswith("]"):
        raise InputError(key, "file names ending in ']' are not accepted (ComfyUI reads them as annotations).")
    if not path.is_file():
        raise InputError(key, f"{shown(value)} does not exist or is not a file.")
    if path.stat().st_size == 0:
        raise InputError(key, f"{shown(value)} is empty.")
    return path
