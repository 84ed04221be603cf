"""The RunPod SDK, imported without its 1.5 s processor probe.

``runpod.serverless.utils.rp_debugger`` calls ``cpuinfo.get_cpu_info()`` at import, which starts a
second Python interpreter to probe the CPU (1.3-1.5 s on a worker, on the start-up path of every
cold start), only to show the processor's name in ``--rp_debugger`` output. During the import that
one call reads the same name from ``/proc/cpuinfo`` instead; everything else is the SDK's own.
Import the SDK through this module (``from .runpod_sdk import runpod``).
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def processor_brand() -> str:
    """The processor's name as py-cpuinfo reports it in ``brand_raw`` (``model name`` on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "Unable to get processor info."


@contextlib.contextmanager
def _quick_cpuinfo() -> Iterator[None]:
    try:
        import cpuinfo
    except ImportError:  # the SDK then reports "Unable to get processor info." by itself
        yield
        return
    original = cpuinfo.get_cpu_info

    def brand_only() -> dict[str, Any]:
        return {"brand_raw": processor_brand()}

    cpuinfo.get_cpu_info = brand_only
    try:
        yield
    finally:
        cpuinfo.get_cpu_info = original


with _quick_cpuinfo():
    import runpod  # noqa: E402
    import runpod.serverless.utils.rp_debugger  # noqa: E402, F401  (the module that probes, imported here)
    from runpod.serverless.utils import rp_ssrf  # noqa: E402

__all__ = ["runpod", "rp_ssrf"]
