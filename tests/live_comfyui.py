"""Finding a real ComfyUI for the opt-in tests that need one (they skip when none answers)."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

COMFYUI_URL = os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188").rstrip("/")


def comfyui_answers(url: str) -> bool:
    """True when something answers /system_stats like a ComfyUI within 2 s."""
    try:
        with urllib.request.urlopen(f"{url}/system_stats", timeout=2) as response:
            return response.status == 200 and "system" in json.loads(response.read())
    except (OSError, ValueError):
        return False


def live_object_info(url: str) -> dict[str, Any]:
    """The node interfaces of the ComfyUI at ``url`` (empty when it does not answer)."""
    try:
        with urllib.request.urlopen(f"{url}/object_info", timeout=30) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return {}
