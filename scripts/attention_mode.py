#!/usr/bin/env python3
"""Decide the attention kernel for WanVideoModelLoader from WAN_ATTENTION_MODE: auto, sdpa or sageattn.

Run with ComfyUI's Python (that is where SageAttention must work). Prints the mode to use on stdout
and the reason on stderr; exit 2 means WAN_ATTENTION_MODE itself is wrong. ``auto`` and ``sageattn``
both fall back to ``sdpa`` unless ``import sageattention`` works *and* a tiny attention call runs on
the GPU: users saw SageAttention crash on some GPUs, so it is tried in a child process first, where a
crash or a hang costs nothing but the fallback.
"""

from __future__ import annotations

import os
import subprocess
import sys

MODES = ("auto", "sdpa", "sageattn")
PROBE_TIMEOUT_S = 180.0


def probe() -> None:
    """Child process: one SageAttention call on the GPU; any exception or crash means it is unusable."""
    import sageattention
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    # Wan 2.1 14B's attention shape per head (dim 128), in (batch, tokens, heads, dim) layout.
    q, k, v = (torch.randn(1, 256, 2, 128, dtype=torch.float16, device="cuda") for _ in range(3))
    out = sageattention.sageattn(q, k, v, tensor_layout="NHD", is_causal=False)
    torch.cuda.synchronize()
    if not bool(out.isfinite().all().item()):
        raise SystemExit("SageAttention returned non-finite values")


def sageattention_problem(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when SageAttention works here; otherwise why not, in a few words."""
    try:
        result = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--probe"],
            capture_output=True, text=True, timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return f"the SageAttention test did not finish within {timeout_s:.0f} s"
    if result.returncode == 0:
        return None
    lines = [line for line in (result.stderr or "").strip().splitlines() if line.strip()]
    detail = lines[-1] if lines else f"exit status {result.returncode}"
    return f"the SageAttention test failed ({detail})"


def resolve(requested: str, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[str, str]:
    """The mode to use and why; raises ValueError for a value that is not one of MODES."""
    mode = requested.strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"WAN_ATTENTION_MODE={requested!r} must be one of: {', '.join(MODES)}.")
    if mode == "sdpa":
        return "sdpa", "WAN_ATTENTION_MODE=sdpa"
    problem = sageattention_problem(timeout_s)
    if problem is None:
        return "sageattn", f"WAN_ATTENTION_MODE={mode} and SageAttention works on this GPU"
    if mode == "sageattn":
        return "sdpa", f"WARNING: WAN_ATTENTION_MODE=sageattn but {problem}; using sdpa instead"
    return "sdpa", f"WAN_ATTENTION_MODE=auto: {problem}; using sdpa"


def main(argv: list[str]) -> int:
    if argv[1:] == ["--probe"]:
        probe()
        return 0
    try:
        mode, reason = resolve(os.environ.get("WAN_ATTENTION_MODE", "auto"))
    except ValueError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    sys.stderr.write(f"Attention mode {mode}: {reason}.\n")
    sys.stdout.write(f"{mode}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
