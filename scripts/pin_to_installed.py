#!/usr/bin/env python3
"""Fit the worker's requirements into ComfyUI's Python environment without changing ComfyUI's stack.

The image has one environment for ComfyUI and the worker. The worker's requirements.txt pins the
versions it is developed with; where ComfyUI and its custom nodes already installed one of those
packages, their version stays (the nodes are what a version change would break, silently, at run
time). So this writes:

- REQUIREMENTS_OUT: the worker's requirements, each already-installed package pinned to its
  installed version (and said so on stderr), the others as the worker pinned them;
- CONSTRAINTS_OUT: every installed package at its installed version, so that nothing the worker's
  new packages pull in may upgrade or downgrade ComfyUI's packages either. pip then fails loudly
  on a real conflict instead of breaking a node.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(canonical(name), dist.version)
    return versions


def fit(requirement_lines: list[str], installed: dict[str, str]) -> tuple[list[str], list[str]]:
    """(requirements to install, notes on what was kept) for the given requirements.txt lines."""
    out: list[str] = []
    notes: list[str] = []
    for line in requirement_lines:
        text = line.split("#", 1)[0].strip()
        match = NAME.match(text)
        if not text or text.startswith("-") or not match:
            out.append(line.rstrip("\n"))
            continue
        name, extras = match.group(1), match.group(2) or ""
        version = installed.get(canonical(name))
        if version is None:
            out.append(text)
            continue
        pinned = f"{name}{extras}=={version}"
        if pinned != text:
            notes.append(f"keeping the installed {name} {version} (the worker asks for {text[len(name):] or 'any'})")
        out.append(pinned)
    return out, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("requirements", type=Path)
    parser.add_argument("requirements_out", type=Path)
    parser.add_argument("constraints_out", type=Path)
    args = parser.parse_args(argv)

    installed = installed_versions()
    lines, notes = fit(args.requirements.read_text(encoding="utf-8").splitlines(), installed)
    args.requirements_out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.constraints_out.write_text(
        "".join(f"{name}=={version}\n" for name, version in sorted(installed.items())), encoding="utf-8"
    )
    for note in notes:
        sys.stderr.write(f"pin_to_installed: {note}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
