"""Settings: each read from the variable it declares, checked at start, and still a frozen dataclass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydantic import ValidationError

from infinitetalk_worker.config import REPO_ROOT, Settings, SettingsError, load_settings, setting_fields


def _other_value(name: str, default):
    """A valid value unlike the default, as the environment would spell it."""
    if isinstance(default, bool):
        return str(not default).lower(), (not default)
    if isinstance(default, (int, float)):
        return str(int(default) + 1), type(default)(int(default) + 1)
    if isinstance(default, Path) or name.endswith("_dir") or name.endswith("_file"):
        return "/srv/elsewhere", Path("/srv/elsewhere")
    if name == "allowed_input_roots":
        return "/srv/a:/srv/b", [Path("/srv/a"), Path("/srv/b")]
    if name == "attention_mode":
        return "sageattn", "sageattn"
    if name == "memory_profile":
        return "48GB", "48gb"
    return "http://elsewhere:1234", "http://elsewhere:1234"


@pytest.mark.parametrize("name", list(setting_fields()))
def test_each_setting_is_read_from_its_own_variable(name):
    info = setting_fields()[name]
    raw, expected = _other_value(name, info.get_default(call_default_factory=True))
    settings = load_settings({info.json_schema_extra["env"]: raw})
    assert getattr(settings, name) == expected
    others = {n for n in setting_fields() if getattr(settings, n) != getattr(load_settings({}), n)}
    assert others == {name}


def test_every_setting_has_a_variable_and_a_description():
    envs = [info.json_schema_extra["env"] for info in setting_fields().values()]
    assert len(envs) == len(set(envs))
    assert all(info.description for info in setting_fields().values())


def test_blank_variables_mean_the_default():
    assert load_settings({"MAX_PROMPT_CHARS": "  ", "COMFYUI_URL": ""}) == load_settings({})
    assert load_settings({}).workflow_dir == REPO_ROOT / "workflows"


@pytest.mark.parametrize("env,message", [
    ({"MAX_DOWNLOAD_BYTES": "lots"}, "Setting MAX_DOWNLOAD_BYTES='lots' must be a whole number."),
    ({"JOB_DEADLINE_S": "soon"}, "Setting JOB_DEADLINE_S='soon' must be a number."),
    ({"JOB_DEADLINE_S": "0"}, "Setting JOB_DEADLINE_S='0' must be greater than zero."),
    ({"MAX_PROMPT_CHARS": "-5"}, "Setting MAX_PROMPT_CHARS='-5' must be greater than zero."),
    ({"PROGRESS_INTERVAL_S": "-1"}, "Setting PROGRESS_INTERVAL_S='-1' must be at least 0."),
    ({"RUN_STARTUP_CHECKS": "maybe"}, "Setting RUN_STARTUP_CHECKS='maybe' must be true or false."),
    ({"WAN_ATTENTION_MODE": "flash"}, "Setting WAN_ATTENTION_MODE='flash' must be auto, sdpa or sageattn."),
    ({"INLINE_OUTPUT_LIMIT_BYTES": "50000000"},
     "Setting INLINE_OUTPUT_LIMIT_BYTES='50000000' is over the 20000000 bytes RunPod accepts in a result; "
     "larger videos go to the network volume or S3."),
])
def test_a_malformed_variable_fails_at_start_naming_it(env, message):
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert str(caught.value) == message


def test_several_malformed_variables_are_all_named():
    with pytest.raises(SettingsError) as caught:
        load_settings({"MAX_AUDIO_SECONDS": "x", "S3_URL_EXPIRY_S": "0"})
    assert "MAX_AUDIO_SECONDS='x'" in str(caught.value) and "S3_URL_EXPIRY_S='0'" in str(caught.value)


def test_values_are_normalised_once_at_start():
    settings = load_settings({"COMFYUI_URL": "http://127.0.0.1:9000/", "WAN_ATTENTION_MODE": "Auto",
                              "ALLOWED_INPUT_ROOTS": "/srv/a::/srv/b/../c", "ALLOW_PRIVATE_URLS": "yes"})
    assert settings.comfyui_url == "http://127.0.0.1:9000"
    assert settings.attention_mode == "sdpa"
    assert settings.allowed_input_roots == [Path("/srv/a"), Path("/srv/c")]
    assert settings.allow_private_urls is True


def test_settings_stay_a_frozen_dataclass_that_validates_on_replace(tmp_path):
    settings = Settings(job_root=tmp_path, progress_interval_s=0.0)
    changed = dataclasses.replace(settings, max_prompt_chars=10)
    assert (changed.max_prompt_chars, changed.job_root) == (10, tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_prompt_chars = 5
    with pytest.raises(ValidationError):
        dataclasses.replace(settings, inline_output_limit_bytes=50_000_000)


def test_the_s3_secret_never_appears_in_the_settings_repr():
    assert "hunter2" not in repr(Settings(bucket_secret_access_key="hunter2"))


def test_derived_properties():
    settings = Settings(volume_root=Path("/vol"))
    assert settings.input_roots == [Path("/vol"), REPO_ROOT / "examples"]
    assert not settings.s3_configured
    assert Settings(bucket_name="b", bucket_access_key_id="k", bucket_secret_access_key="s").s3_configured
