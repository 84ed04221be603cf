"""The request and settings models as JSON Schema and as the README's tables.

The README's request, settings and limits tables sit between markers and are written from the models
by ``python -m infinitetalk_worker schema --write-readme``; a test fails when they differ, so the
README cannot drift from what the worker validates.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .comfy_client import LOG_TAIL_LINES, RECONNECT_EVERY_S, UNREACHABLE_AFTER_S
from .config import REPO_ROOT, Settings, setting_fields
from .constants import FPS, MIN_AUDIO_SECONDS
from .downloads import MAX_REDIRECTS
from .errors import MAX_SHOWN_CHARS
from .request import MAX_LISTED_KEYS, SLOT_TEXT, SLOTS, JobRequest

log = logging.getLogger(__name__)

README = REPO_ROOT / "README.md"
BEGIN = "<!-- {name} table: generated from the code by `python -m infinitetalk_worker schema --write-readme` -->"
END = "<!-- end of the generated {name} table -->"
NO_DEFAULT = "—"


def request_schema() -> dict[str, Any]:
    """The job input as JSON Schema (what a client may send under ``input``)."""
    return JobRequest.model_json_schema()


def settings_schema() -> dict[str, Any]:
    """The settings as JSON Schema; each property's ``env`` is its environment variable."""
    return TypeAdapter(Settings).json_schema()


def request_table() -> str:
    """One row per key; the three sources of a media slot share a row."""
    properties = request_schema()["properties"]
    slot_of = {key: slot for slot, keys in SLOTS.items() for key in keys}
    rows, done = [], set()
    for name, prop in properties.items():
        slot = slot_of.get(name)
        if slot in done:
            continue
        if slot:
            done.add(slot)
            what, when = SLOT_TEXT[slot]
            keys = " / ".join(f"`{key}`" for key in SLOTS[slot])
            rows.append([keys, _type_text(prop), NO_DEFAULT, f"{what}; exactly one, required {when}"])
        else:
            rows.append([f"`{name}`", _type_text(prop), _default_text(prop), prop.get("description", "")])
    return _table(["key", "type", "default", "meaning"], rows)


def settings_table() -> str:
    """One row per setting: its variable, default and meaning."""
    rows = [[f"`{_env(info)}`", _setting_default(name, info), info.description or ""]
            for name, info in setting_fields().items()]
    return _table(["variable", "default", "meaning"], rows)


def limits_table() -> str:
    """Every bound on what a request may cost: the settings that set one, the request's ranges, the fixed ones."""
    return _table(["what", "limit", "setting (default)"], _setting_limit_rows() + _request_limit_rows() + _fixed_rows())


def _setting_limit_rows() -> list[list[str]]:
    grouped: dict[tuple[str, str], list[str]] = {}
    for name, info in setting_fields().items():
        limit = (info.json_schema_extra or {}).get("x-limit")
        if limit:
            grouped.setdefault(tuple(limit), []).append(f"`{_env(info)}` ({_setting_default(name, info)})")
    return [[what, how, ", ".join(names)] for (what, how), names in grouped.items()]


def _request_limit_rows() -> list[list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, prop in request_schema()["properties"].items():
        ranged = [option for option in prop.get("anyOf", [prop]) if "minimum" in option]
        if ranged:
            grouped.setdefault(_range(ranged[0]), []).append(f"`{name}`")
    return [[", ".join(names), limit, "fixed"] for limit, names in grouped.items()]


def _fixed_rows() -> list[list[str]]:
    return [
        ["shortest audio", f"{MIN_AUDIO_SECONDS:g} s per voice, {round(MIN_AUDIO_SECONDS * FPS)} frames at {FPS} fps: "
                           "shorter carries no syllable to lip-sync (under one frame the audio-embedding node makes "
                           "no frame at all)", "fixed"],
        ["URL redirects", f"{MAX_REDIRECTS} hops, each hop checked like the first", "fixed"],
        ["unknown keys", f"accepted; the first {MAX_LISTED_KEYS} are listed in `warnings`, then a count", "fixed"],
        ["echoed values", f"an error repeats at most {MAX_SHOWN_CHARS} characters of a value it quotes "
                          "(the middle is cut out, the length is said)", "fixed"],
        ["websocket dropped", f"reopened every {RECONNECT_EVERY_S:g} s while `/history` is polled", "fixed"],
        ["ComfyUI not answering", f"failed after {UNREACHABLE_AFTER_S:g} s without an answer, with the last "
                                  f"{LOG_TAIL_LINES} lines of its log", "`COMFYUI_LOG_FILE` (unset: no log quoted)"],
    ]


def _type_text(prop: dict[str, Any], plural: bool = False) -> str:
    """A property's JSON Schema in words: ``integer 128–1920``, ``"image" | "video"``, ``string``."""
    options = [option for option in prop.get("anyOf", [prop]) if option.get("type") != "null"]
    if len(options) > 1:
        return " or ".join(_type_text(option, plural) for option in options)
    option = options[0]
    if "enum" in option:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in option["enum"])
    kind = option.get("type", "value") + ("s" if plural else "")
    if "prefixItems" in option:
        return f"{kind} of {len(option['prefixItems'])} {_type_text(option['prefixItems'][0], plural=True)}"
    return f"{kind} {_range(option)}" if "minimum" in option else kind


def _range(option: dict[str, Any]) -> str:
    return f"{_number(option['minimum'])}–{_number(option['maximum'])}"


def _number(value: float) -> str:
    """Numbers as people write them: 30 not 30.0, 2^64−1 not twenty digits."""
    if isinstance(value, int) and value > 2**32 and (value + 1) & value == 0:
        return f"2^{value.bit_length()}−1"
    return str(int(value)) if float(value).is_integer() else str(value)


def _default_text(prop: dict[str, Any]) -> str:
    if "x-default" in prop:
        return prop["x-default"]
    default = prop.get("default")
    return NO_DEFAULT if default is None else f"`{json.dumps(default)}`"


def _env(info: Any) -> str:
    return info.json_schema_extra["env"]


def _setting_default(name: str, info: Any) -> str:
    """A default as the README shows it: paths inside the checkout as ``<repo>/...``, numbers as written."""
    if "x-default" in (info.json_schema_extra or {}):
        return info.json_schema_extra["x-default"]
    value = info.get_default(call_default_factory=True)
    if value is None or value == "":
        return NO_DEFAULT
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, Path) and value.is_relative_to(REPO_ROOT):
        return f"`<repo>/{value.relative_to(REPO_ROOT)}`"
    return f"`{value}`"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


TABLES: dict[str, Callable[[], str]] = {"request": request_table, "settings": settings_table, "limits": limits_table}


def generated_sections(text: str) -> dict[str, str]:
    """The README's generated tables as they stand, by name (missing markers raise ``ValueError``)."""
    sections = {}
    for name in TABLES:
        begin, end = BEGIN.format(name=name), END.format(name=name)
        if text.count(begin) != 1 or text.count(end) != 1:
            raise ValueError(f"README must hold exactly one '{begin}' ... '{end}' pair")
        sections[name] = text.split(begin, 1)[1].split(end, 1)[0].strip("\n")
    return sections


def with_tables(text: str) -> str:
    """``text`` with every generated table replaced by what the models say now."""
    for name, make in TABLES.items():
        begin, end = BEGIN.format(name=name), END.format(name=name)
        head, rest = text.split(begin, 1)
        text = f"{head}{begin}\n{make()}\n{end}{rest.split(end, 1)[1]}"
    return text


def readme_drift(text: str) -> list[str]:
    """A unified diff per table that the README holds differently from the models (empty when in step)."""
    current = generated_sections(text)
    problems = []
    for name, make in TABLES.items():
        if current[name] != make():
            diff = difflib.unified_diff(current[name].splitlines(), make().splitlines(), "README", "models",
                                        lineterm="")
            problems.append(f"The README's {name} table differs from the code:\n" + "\n".join(diff))
    return problems


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schema", help="print the request's JSON Schema, or write the README's tables")
    parser.add_argument("--settings", action="store_true", help="the settings' JSON Schema instead of the request's")
    parser.add_argument("--markdown", nargs="?", const="request", choices=sorted(TABLES),
                        help="print a README table (default: request)")
    parser.add_argument("--write-readme", action="store_true", help="rewrite the generated tables in the README")
    parser.add_argument("--check-readme", action="store_true", help="exit 1 when the README's tables are out of date")
    parser.add_argument("--readme", type=Path, default=README, help="the README to write or check")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.write_readme:
        args.readme.write_text(with_tables(args.readme.read_text()))
        return 0
    if args.check_readme:
        problems = readme_drift(args.readme.read_text())
        for problem in problems:
            log.error("%s", problem)
        return 1 if problems else 0
    if args.markdown:
        sys.stdout.write(TABLES[args.markdown]() + "\n")
        return 0
    sys.stdout.write(json.dumps(settings_schema() if args.settings else request_schema(), indent=2) + "\n")
    return 0
