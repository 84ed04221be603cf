#!/usr/bin/env python3
"""Fail the image build when ComfyUI cannot import a custom node or one of its own extra nodes.

ComfyUI only logs an import failure and starts anyway, so a missing dependency would otherwise show
up as "unknown node class" on the first job. This runs ComfyUI the way its CI does
(``main.py --cpu --quick-test-for-ci``: load every node, then exit) and reads its log:

- a ``(IMPORT FAILED)`` custom node, or a ``comfy_extras`` node that failed, fails the check;
- every folder under ``custom_nodes/`` must appear in ComfyUI's list of loaded custom nodes;
- ComfyUI's own API nodes (paid cloud services, unused here) only produce a warning.

ComfyUI lists failed built-in modules by file name under a header that says which kind they are
("some comfy_extras/ nodes did not import correctly" or "some comfy_api_nodes/ ...").
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

LOADED_LINE = re.compile(r"[\d.]+ seconds( \(IMPORT FAILED\))?: (?P<path>\S.*?)\s*$")
BUILTIN_FAILED = re.compile(r"IMPORT FAILED: (?P<name>\S+)")
IMPORT_REASON = re.compile(r"Cannot import (?P<path>.+?) module for custom nodes: (?P<reason>.*)$")
SECTION = re.compile(r"some (?P<kind>comfy_extras|comfy_api_nodes)/ nodes did not import correctly")
TAIL_LINES = 60


def expected_nodes(comfyui_dir: Path) -> list[str]:
    """Every installed custom node package (folders, as ComfyUI sees them; caches and hidden ones aside)."""
    folder = comfyui_dir / "custom_nodes"
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith((".", "__")) and not p.name.endswith(".disabled")
    )


def read_log(log: str) -> tuple[set[str], set[str], list[str], list[str]]:
    """(custom nodes loaded, custom nodes failed, comfy_extras failed, comfy_api_nodes failed)."""
    loaded: set[str] = set()
    failed: set[str] = set()
    builtin_failed: dict[str, list[str]] = {"comfy_extras": [], "comfy_api_nodes": []}
    section = "comfy_extras"
    for line in log.splitlines():
        if match := LOADED_LINE.search(line):
            (failed if match.group(1) else loaded).add(Path(match.group("path")).name)
        elif match := SECTION.search(line):
            section = match.group("kind")
        elif match := BUILTIN_FAILED.search(line):
            builtin_failed[section].append(match.group("name"))
    return loaded, failed, builtin_failed["comfy_extras"], builtin_failed["comfy_api_nodes"]


def import_reasons(log: str) -> dict[str, str]:
    """ComfyUI's one-line reason per module that failed to import, by file or folder name."""
    reasons = {}
    for line in log.splitlines():
        if match := IMPORT_REASON.search(line):
            reasons[Path(match.group("path")).name] = match.group("reason").strip()
    return reasons


def problems(comfyui_dir: Path, log: str, exit_status: int) -> tuple[list[str], list[str]]:
    """(errors, warnings) for this run of ComfyUI."""
    loaded, failed, extras_failed, api_failed = read_log(log)
    reasons = import_reasons(log)

    def because(name: str) -> str:
        return f": {reasons[name]}" if reasons.get(name) else ""

    errors = [f"custom node {name} failed to import{because(name)}" for name in sorted(failed)]
    errors += [
        f"custom node {name} is installed but ComfyUI did not load it"
        for name in expected_nodes(comfyui_dir) if name not in loaded and name not in failed
    ]
    errors += [f"ComfyUI's comfy_extras/{name} failed to import{because(name)}" for name in extras_failed]
    warnings = [
        f"ComfyUI's comfy_api_nodes/{name} failed to import{because(name)} (not used by this worker)"
        for name in api_failed
    ]
    if exit_status != 0:
        errors.append(f"ComfyUI exited with status {exit_status}")
    return errors, warnings


def run_comfyui(comfyui_dir: Path, python: str, timeout_s: float) -> tuple[str, int]:
    command = [python, "main.py", "--cpu", "--quick-test-for-ci", "--disable-auto-launch"]
    try:
        result = subprocess.run(
            command, cwd=comfyui_dir, capture_output=True, text=True, timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return output + f"\n(timed out after {timeout_s:.0f} s)", 124
    return result.stdout + result.stderr, result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui-dir", type=Path, required=True)
    parser.add_argument("--python", default=sys.executable, help="the Python that runs ComfyUI")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds ComfyUI may take to load")
    args = parser.parse_args(argv)

    log, status = run_comfyui(args.comfyui_dir, args.python, args.timeout)
    errors, warnings = problems(args.comfyui_dir, log, status)
    for warning in warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if errors:
        tail = "\n".join(log.splitlines()[-TAIL_LINES:])
        sys.stderr.write(f"--- last {TAIL_LINES} lines of ComfyUI's log ---\n{tail}\n---\n")
        for error in errors:
            sys.stderr.write(f"error: {error}\n")
        return 1
    loaded = ", ".join(expected_nodes(args.comfyui_dir)) or "none"
    sys.stdout.write(f"ComfyUI loaded every custom node: {loaded}.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
