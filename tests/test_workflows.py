"""Workflow selection and role patching: values land where roles say, gaps are loud errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infinitetalk_worker.errors import WorkflowError
from infinitetalk_worker.media import PreparedMedia
from infinitetalk_worker.request import parse_request
from infinitetalk_worker.workflows import (
    WORKFLOW_FILES,
    explicit_values,
    graph_values,
    load_workflow,
    load_workflow_set,
    patch_workflow,
)


def node(class_type, title="", **inputs):
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


def single_graph():
    return {
        "1": node("LoadImage", "portrait role:image", image="placeholder.png"),
        "2": node("LoadAudio", "role:audio_1", audio="placeholder.wav"),
        "3": node("ImageScale", "role:width role:height", image=["1", 0], width=8, height=8,
                  upscale_method="bilinear", crop="center"),
        "4": node("RepeatImageBatch", "role:num_frames", image=["3", 0], amount=1),
        "5": node("ImageAddNoise", "role:sampler", image=["4", 0], seed=0, strength=0.02),
        "6": node("PrimitiveString", "role:prompt", value=""),
        "7": node("VHS_VideoCombine", "role:output", images=["5", 0], audio=["2", 0], filename_prefix="x",
                  frame_rate=25),
    }


def write(path: Path, graph) -> Path:
    path.write_text(json.dumps(graph))
    return path


def media_for(tmp_path, seconds=2.0, size=(304, 512)):
    """What prepare_media would hand on; the size is the one it decides (here: the request's, rounded)."""
    return PreparedMedia(files={"image": tmp_path / "face.png", "audio_1": tmp_path / "voice.wav"},
                         audio_seconds={"audio_1": seconds}, audio_tracks={"audio_1": (int(seconds * 16000), 16000)},
                         output_size=size)


def test_patching_writes_every_value_by_role_and_leaves_the_original_alone(tmp_path):
    workflow = load_workflow(write(tmp_path / "i2v_single.json", single_graph()))
    raw = {"image_path": "/x.png", "wav_path": "/y.wav", "width": 300, "prompt": "hi", "seed": 7}
    request = parse_request(raw, 100)
    graph = patch_workflow(workflow, graph_values(request, media_for(tmp_path), 7, "infinitetalk/job1"),
                           explicit_values(request))
    assert graph["1"]["inputs"]["image"] == str(tmp_path / "face.png")
    assert graph["2"]["inputs"]["audio"] == str(tmp_path / "voice.wav")
    assert (graph["3"]["inputs"]["width"], graph["3"]["inputs"]["height"]) == (304, 512)
    assert graph["4"]["inputs"]["amount"] == 50
    assert graph["5"]["inputs"]["seed"] == 7
    assert graph["6"]["inputs"]["value"] == "hi"
    assert graph["7"]["inputs"]["filename_prefix"] == "infinitetalk/job1"
    assert workflow.graph["4"]["inputs"]["amount"] == 1


def test_an_explicit_value_without_a_place_is_an_error_naming_it(tmp_path):
    workflow = load_workflow(write(tmp_path / "i2v_single.json", single_graph()))
    request = parse_request({"image_path": "/x.png", "wav_path": "/y.wav", "steps": 8}, 100)
    with pytest.raises(WorkflowError, match="i2v_single.json has no node that takes steps"):
        patch_workflow(workflow, graph_values(request, media_for(tmp_path), 1, "p"), explicit_values(request))


def test_defaults_without_a_place_are_skipped(tmp_path):
    graph = single_graph()
    del graph["6"]
    workflow = load_workflow(write(tmp_path / "i2v_single.json", graph))
    request = parse_request({"image_path": "/x.png", "wav_path": "/y.wav"}, 100)
    patched = patch_workflow(workflow, graph_values(request, media_for(tmp_path), 1, "p"), explicit_values(request))
    assert "6" not in patched


def test_unknown_roles_and_wrong_classes_are_refused_at_load(tmp_path):
    graph = single_graph()
    graph["8"] = node("ImageBlur", "role:width")
    expected = r"node 8 \(ImageBlur\) carries role:width, which the worker can only write to"
    with pytest.raises(WorkflowError, match=expected):
        load_workflow(write(tmp_path / "a.json", graph))
    graph["8"] = node("ImageBlur", "role:colour")
    with pytest.raises(WorkflowError, match="node 8 carries unknown role:colour"):
        load_workflow(write(tmp_path / "b.json", graph))


def test_a_set_missing_a_required_role_names_file_and_role(tmp_path):
    for file_name in WORKFLOW_FILES.values():
        write(tmp_path / file_name, single_graph())
    with pytest.raises(WorkflowError, match="i2v_multi.json lacks the role\\(s\\) audio_2, soundtrack"):
        load_workflow_set(tmp_path)


def test_not_an_api_graph_is_refused(tmp_path):
    (tmp_path / "ui.json").write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(WorkflowError, match="not an API-format graph"):
        load_workflow(tmp_path / "ui.json")


def test_attention_mode_setting_reaches_the_model_loader_of_every_production_graph(tmp_path):
    from infinitetalk_worker.config import REPO_ROOT, SettingsError, load_settings

    assert load_settings({"WAN_ATTENTION_MODE": "auto"}).attention_mode == "sdpa"
    assert load_settings({}).attention_mode is None
    with pytest.raises(SettingsError, match="WAN_ATTENTION_MODE='flash' must be auto, sdpa or sageattn"):
        load_settings({"WAN_ATTENTION_MODE": "flash"})
    request = parse_request({"image_path": "/x.png", "wav_path": "/y.wav"}, 100)
    for workflow in load_workflow_set(REPO_ROOT / "workflows").values():
        values = graph_values(request, media_for(tmp_path), 1, "p", attention_mode="sageattn")
        values.update(video_file="/v.mp4", audio_2_file="/b.wav", soundtrack_file="/s.wav")
        graph = patch_workflow(workflow, values, set())
        loaders = [n for n in graph.values() if n["class_type"] == "WanVideoModelLoader"]
        assert loaders and all(n["inputs"]["attention_mode"] == "sageattn" for n in loaders)


def test_render_command_prints_the_graph_and_names_bad_fields(tmp_path, capsys, monkeypatch):
    from infinitetalk_worker.__main__ import main
    from testsupport.media_factory import make_image, make_wav

    monkeypatch.setenv("ALLOWED_INPUT_ROOTS", str(tmp_path))
    monkeypatch.setenv("WORKFLOW_DIR", str(Path(__file__).resolve().parents[1] / "workflows"))
    job = {"input": {"image_path": str(make_image(tmp_path / "face.png")),
                     "wav_path": str(make_wav(tmp_path / "v.wav", 2.0)), "seed": 5, "steps": 8}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    assert main(["render", str(tmp_path / "job.json")]) == 0
    graph = json.loads(capsys.readouterr().out)
    sampler = next(n for n in graph.values() if n["class_type"] == "WanVideoSampler")
    assert (sampler["inputs"]["seed"], sampler["inputs"]["steps"]) == (5, 8)
    assert any(n["inputs"].get("image") == str(tmp_path / "face.png") for n in graph.values())
    (tmp_path / "bad.json").write_text(json.dumps({"image_path": str(tmp_path / "face.png")}))
    assert main(["render", str(tmp_path / "bad.json")]) == 1
    assert "wav_path: one of wav_path" in capsys.readouterr().err
