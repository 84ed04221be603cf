"""The request's JSON Schema and the README's request, settings and limits tables, against the models.

The README tables are generated (``python -m infinitetalk_worker schema --write-readme``); these tests
fail when someone changes a key, type, range, default or setting without regenerating them, and check
the README rows directly as well, so a fault in the generator cannot hide a missing key.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from infinitetalk_worker.config import REPO_ROOT, setting_fields
from infinitetalk_worker.errors import InputError
from infinitetalk_worker.request import SLOTS, JobRequest, parse_request
from infinitetalk_worker.schema import BEGIN, generated_sections, readme_drift, with_tables

README = (REPO_ROOT / "README.md").read_text()
BASE = {"image_path": "/face.png", "wav_path": "/voice.wav"}
PROPERTIES = JobRequest.model_json_schema()["properties"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infinitetalk_worker", "schema", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


def _rows(table: str) -> dict[str, list[str]]:
    """README table rows by their first cell, split on unescaped pipes."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0]] = cells
    return rows


def _written(number: float) -> str:
    """A number as the README writes it: 30 for 30.0, every digit of 209715200."""
    return str(int(number)) if float(number).is_integer() else str(number)


def test_the_readme_tables_are_what_the_models_say():
    assert readme_drift(README) == [], "\n\n".join(readme_drift(README)) + (
        "\n\nRun `python -m infinitetalk_worker schema --write-readme` and commit README.md.")


def test_a_changed_default_is_caught(monkeypatch):
    monkeypatch.setattr(JobRequest.model_fields["width"], "default", 640)
    JobRequest.model_rebuild(force=True)
    try:
        assert any("request table" in problem and "`640`" in problem for problem in readme_drift(README))
    finally:
        monkeypatch.undo()
        JobRequest.model_rebuild(force=True)
    assert readme_drift(README) == []


def test_a_new_setting_shows_up_as_drift():
    doctored = README.replace("| `ALLOW_STANDIN_MODELS` |", "| `SOMETHING_ELSE` |")
    assert [problem.splitlines()[0] for problem in readme_drift(doctored)] == [
        "The README's settings table differs from the code:"]
    assert with_tables(doctored) == README


def test_every_request_key_has_a_row_with_its_range_and_default():
    rows = _rows(generated_sections(README)["request"])
    cells = {key: row for row in rows.values() for key in re.findall(r"`(\w+)`", row[0])}
    assert set(cells) == set(JobRequest.model_fields)
    for name, prop in PROPERTIES.items():
        option = next((o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"), prop)
        if "minimum" in option and name != "seed" and not name.startswith("speaker"):
            assert f"{_written(option['minimum'])}–{_written(option['maximum'])}" in cells[name][1], name
        if prop.get("x-default"):  # the default a user sees differs from the model's placeholder
            assert cells[name][2] == prop["x-default"], name
        elif prop.get("default") is not None:
            assert cells[name][2] == f"`{json.dumps(prop['default'])}`", name
        for value in option.get("enum", []):
            assert f'`"{value}"`' in cells[name][1], name
    assert "2^64−1" in cells["seed"][1]


def test_every_setting_has_a_row_with_its_variable_and_default():
    rows = _rows(generated_sections(README)["settings"])
    for info in setting_fields().values():
        env = info.json_schema_extra["env"]
        assert f"`{env}`" in rows, env
        default = info.get_default(call_default_factory=True)
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            assert rows[f"`{env}`"][1] == _written(default), env


def test_every_limit_setting_is_in_the_limits_table_with_its_default():
    limits = generated_sections(README)["limits"]
    for name, info in setting_fields().items():
        if "x-limit" in info.json_schema_extra:
            default = info.get_default()
            assert f"`{info.json_schema_extra['env']}` ({_written(default)})" in limits, name


def test_missing_markers_are_reported():
    with pytest.raises(ValueError, match="request table"):
        generated_sections(README.replace(BEGIN.format(name="request"), ""))


def test_schema_command_prints_the_request_json_schema():
    printed = _cli()
    assert printed.returncode == 0, printed.stderr
    schema = json.loads(printed.stdout)
    assert set(schema["properties"]) == set(JobRequest.model_fields)
    assert schema["properties"]["width"]["minimum"] == 128 and schema["properties"]["width"]["maximum"] == 1920
    assert all(prop.get("description") for prop in schema["properties"].values())


def test_schema_command_prints_settings_and_tables_and_checks_the_readme(tmp_path):
    settings = json.loads(_cli("--settings").stdout)
    assert settings["properties"]["max_prompt_chars"]["env"] == "MAX_PROMPT_CHARS"
    assert _cli("--markdown").stdout.strip() == generated_sections(README)["request"]
    assert _cli("--check-readme").returncode == 0
    stale = tmp_path / "README.md"
    stale.write_text(README.replace("| `MAX_PROMPT_CHARS` | 2000 |", "| `MAX_PROMPT_CHARS` | 1000 |"))
    check = _cli("--check-readme", "--readme", str(stale))
    assert check.returncode == 1 and "settings table differs" in check.stderr
    assert _cli("--write-readme", "--readme", str(stale)).returncode == 0
    assert stale.read_text() == README


@pytest.mark.parametrize("name", [n for n, p in PROPERTIES.items()
                                  if any("minimum" in o for o in p.get("anyOf", [p])) and n != "speaker_boxes"])
def test_the_schema_ranges_are_the_ones_the_model_enforces(name):
    option = next(o for o in PROPERTIES[name].get("anyOf", [PROPERTIES[name]]) if "minimum" in o)
    low, high = option["minimum"], option["maximum"]
    step = 1 if option["type"] == "integer" else 0.001
    base = {**BASE, **NEEDS.get(name, {})}
    for accepted in (low, high):
        assert getattr(parse_request({**base, name: accepted}, 100), name) == accepted
    for refused in (low - step, high + step):
        with pytest.raises(InputError, match=f"^{name}: .* is out of range"):
            parse_request({**base, name: refused}, 100)


# keys that only mean something together with another one (the schema's range is the widest the model takes)
NEEDS = {"acceleration_threshold": {"acceleration": "teacache"}}


@pytest.mark.parametrize("name", [n for n, p in PROPERTIES.items() if "enum" in json.dumps(p) and n != "test"
                                  and not any(o.get("type") == "boolean" for o in p.get("anyOf", []))])
def test_the_schema_choices_are_the_ones_the_model_accepts(name):
    option = next(o for o in PROPERTIES[name].get("anyOf", [PROPERTIES[name]]) if "enum" in o)
    extra = {"video_path": "/v.mp4", "wav_path_2": "/v2.wav"}
    for value in option["enum"]:
        assert getattr(parse_request({**BASE, **extra, name: value}, 100), name) == value
    with pytest.raises(InputError, match=f"^{name}: 'other' is not allowed"):
        parse_request({**BASE, name: "other"}, 100)


def test_every_source_key_is_in_the_schema():
    assert {key for keys in SLOTS.values() for key in keys} <= set(PROPERTIES)
