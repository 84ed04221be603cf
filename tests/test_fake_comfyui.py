"""The fake ComfyUI speaks the protocol exactly as the recorded real ComfyUI does.

The recorded session in shared/comfyui/traces (a 400, an execution error, a VHS success, a SaveVideo
success, an interrupt, a rerun; in that order on one server) is replayed against one fake with a
client that does what the recorder did, and compared message for message: message types and their
order, data field names and value types, HTTP status codes and bodies, history shape. Then the MP4 the
fake renders is decoded, and the failure scenarios the worker's tests rely on are checked.
"""

from __future__ import annotations

import copy
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import pytest
import requests
import websocket
from PIL import Image

from testsupport.fake_comfyui import NODE_CLASSES, FakeComfyUI
from testsupport.media_factory import make_wav

SHARED = Path(__file__).resolve().parent / "data" / "comfyui"
TRACES = SHARED / "traces"
TIMEOUT = 15


# -- inputs and graphs -----------------------------------------------------------------------


def write_png(path: Path, size: tuple[int, int] = (96, 80)) -> Path:
    image = Image.new("RGB", size, (200, 160, 140))
    image.paste((40, 40, 40), (size[0] // 3, size[1] // 3, size[0] // 2, size[1] // 2))
    image.save(path)
    return path


def write_wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    return make_wav(path, seconds, rate)


def load_trace(name: str) -> list[dict]:
    return [json.loads(line) for line in (TRACES / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def traced_graph(name: str) -> dict:
    """The graph a trace ran, as its history recorded it."""
    history = next(r for r in load_trace(name) if r["kind"] == "http" and r["path"].startswith("/history/"))
    (entry,) = history["body"].values()
    return entry["prompt"][2]


def with_inputs(graph: dict, inputs: Path) -> dict:
    """The recorder's /inputs/ directory becomes our temp directory of real files."""
    text = json.dumps(graph).replace('"/inputs/', json.dumps(str(inputs) + "/")[:-1])
    return json.loads(text)


SMOKE_ROLES = {"1": "image role:image", "2": "audio role:audio_1", "3": "role:width role:height",
               "4": "role:num_frames", "5": "role:output", "7": "role:output"}


def smoke_graph(kind: str, inputs: Path) -> dict:
    """A CPU smoke graph of shared/comfyui with real inputs and role titles (the worker's way)."""
    graph = with_inputs(json.loads((SHARED / f"workflow_smoke_{kind}.json").read_text()), inputs)
    for node_id, title in SMOKE_ROLES.items():
        if node_id in graph:
            graph[node_id]["_meta"] = {"title": title}
    return graph


# -- a client that does what the trace recorder did -------------------------------------------


OPEN_RECORDERS: list[Recorder] = []


@pytest.fixture(autouse=True)
def close_recorder_sockets():
    yield
    while OPEN_RECORDERS:
        OPEN_RECORDERS.pop().ws.close()


class Recorder:
    """Opens /ws?clientId, POSTs /prompt with that client_id, reads until `executing` null, GETs history."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client_id = str(uuid.uuid4())
        self.records: list[dict] = []
        self.ws = websocket.create_connection(f"{url.replace('http', 'ws')}/ws?clientId={self.client_id}",
                                              timeout=TIMEOUT)
        OPEN_RECORDERS.append(self)
        self.read()  # the status with our sid

    def read(self) -> dict | None:
        opcode, data = self.ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_BINARY:
            self.records.append({"kind": "ws_binary", "event": int.from_bytes(data[:4], "big")})
            return None
        message = json.loads(data)
        self.records.append({"kind": "ws", "msg": message})
        return message

    def http(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = requests.request(method, self.url + path, timeout=TIMEOUT, **kwargs)
        body = response.json() if response.content else {}
        self.records.append({"kind": "http", "method": method, "path": path, "status": response.status_code,
                             "body": body})
        return response

    def run(self, graph: dict, on_message: Callable[[dict], None] = lambda m: None) -> SimpleNamespace:
        response = self.http("POST", "/prompt", json={"prompt": graph, "client_id": self.client_id})
        if response.status_code != 200:
            return SimpleNamespace(records=self.records, status=response.status_code, prompt_id=None)
        prompt_id = response.json()["prompt_id"]
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            message = self.read()
            if message is None:
                continue
            on_message(message)
            if message["type"] == "executing" and message["data"] == {"node": None, "prompt_id": prompt_id}:
                break
        self.http("GET", f"/history/{prompt_id}")
        self.ws.close()
        return SimpleNamespace(records=self.records, status=200, prompt_id=prompt_id)


# -- comparing with a trace ------------------------------------------------------------------


def ws_messages(records: list[dict]) -> list[dict]:
    return [r["msg"] for r in records if r["kind"] == "ws"]


def http_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "http"]


def exact_tokens(messages: list[dict]) -> list[tuple]:
    """Each message reduced to what must match exactly: type, node, step, state change, queue size."""
    tokens, states = [], {}
    for message in messages:
        kind, data = message["type"], message["data"]
        if kind == "progress_state":
            now = {n: (s["state"], s["value"], s["max"]) for n, s in data["nodes"].items()}
            tokens.append((kind, tuple((n, *v) for n, v in now.items() if states.get(n) != v)))
            states = now
        elif kind == "status":
            tokens.append((kind, data["status"]["exec_info"]["queue_remaining"], "sid" in data))
        elif kind in ("executing", "executed"):
            tokens.append((kind, data["node"]))
        elif kind == "progress":
            tokens.append((kind, data["node"], data["value"], data["max"]))
        elif kind == "execution_cached":
            tokens.append((kind, tuple(data["nodes"])))
        elif kind in ("execution_error", "execution_interrupted"):
            tokens.append((kind, data["node_id"], data["node_type"], frozenset(data["executed"])))
        else:
            tokens.append((kind,))
    return tokens


def coarse_shape(messages: list[dict]) -> list:
    """The sequence with node ids dropped, each node's step run collapsed, and runs of identical node
    blocks collapsed: what must match when the two graphs differ in how many nodes they run."""
    tokens = []
    for token in exact_tokens(messages):
        if token[0] == "progress_state":
            token = ("progress_state", tuple(_phase(state, value) for _, state, value, _ in token[1]))
        elif token[0] in ("executing", "executed"):
            token = (token[0], token[1] is None)
        elif token[0] in ("progress", "execution_cached", "execution_error", "execution_interrupted"):
            token = (token[0],)
        tokens.append(token)
    return _collapse_blocks(tokens)


def _phase(state: str, value: float) -> str:
    return "done" if state == "finished" else "start" if value == 0 else "step"


def _collapse_blocks(tokens: list) -> list:
    start = ("progress_state", ("start",))
    blocks, current = [], []
    for token in tokens:
        if token == start or token[0] in ("execution_success", "execution_error", "execution_interrupted"):
            blocks.append(tuple(current))
            current = []
        current.append(token)
    blocks.append(tuple(current))
    steps = [("progress_state", ("step",)), ("progress",)]
    squeezed = [tuple(_squeeze(list(b), steps)) for b in blocks]
    return [b for i, b in enumerate(squeezed) if i == 0 or b != squeezed[i - 1]]


def _squeeze(tokens: list, pattern: list) -> list:
    out = []
    for token in tokens:
        out.append(token)
        if out[-4:] == pattern * 2:
            del out[-2:]
    return out


def key_tree(value: Any) -> Any:
    """Field names and value types, recursively; dicts keyed by node ids collapse to one '<id>' entry."""
    if isinstance(value, dict):
        if value and all(str(k).isdigit() for k in value):
            return {"<id>": _merge([key_tree(v) for v in value.values()])}
        return {k: key_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_merge([key_tree(v) for v in value])] if value else []
    return frozenset({type(value).__name__})


def _merge(trees: list) -> Any:
    if not trees:
        return None
    if all(isinstance(t, frozenset) for t in trees):
        return frozenset().union(*trees)
    if all(isinstance(t, dict) for t in trees):
        keys = dict.fromkeys(k for t in trees for k in t)
        return {k: _merge([t[k] for t in trees if k in t]) for k in keys}
    if all(isinstance(t, list) for t in trees):
        return [_merge([x for t in trees for x in t])] if any(trees) else []
    return ("mixed", tuple(map(repr, trees)))


def fields_by_type(messages: list[dict]) -> dict[str, Any]:
    grouped: dict[str, list] = {}
    for message in messages:
        grouped.setdefault(message["type"], []).append(key_tree(message["data"]))
    return {kind: _merge(trees) for kind, trees in grouped.items()}


def history_entry(records: list[dict]) -> dict:
    record = next(r for r in records if r["kind"] == "http" and r["path"].startswith("/history/"))
    assert record["status"] == 200
    (entry,) = record["body"].values()
    return entry


def normalized_graph(graph: dict) -> dict:
    graph = copy.deepcopy(graph)
    for node in graph.values():
        node.pop("_meta", None)
        for name, value in node["inputs"].items():
            if isinstance(value, str) and value.startswith("/"):
                node["inputs"][name] = "<input>/" + Path(value).name
    return graph


def assert_history_like(entry: dict, traced: dict) -> None:
    assert list(entry) == list(traced) == ["prompt", "outputs", "status", "meta"]
    number, prompt_id, graph, extra_data, outputs = entry["prompt"]
    assert [type(x) for x in entry["prompt"]] == [type(x) for x in traced["prompt"]]
    assert normalized_graph(graph) == normalized_graph(traced["prompt"][2])
    assert list(extra_data) == list(traced["prompt"][3]) and outputs == traced["prompt"][4]
    assert key_tree(entry["outputs"]) == key_tree(traced["outputs"])
    assert entry["meta"] == traced["meta"]
    assert {k: v for k, v in entry["status"].items() if k != "messages"} == \
        {k: v for k, v in traced["status"].items() if k != "messages"}
    assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in traced["status"]["messages"]]
    assert [key_tree(m[1]) for m in entry["status"]["messages"]] == \
        [key_tree(m[1]) for m in traced["status"]["messages"]]


def assert_outputs_equal(ours: dict, traced: dict, fake: FakeComfyUI) -> None:
    """Output entries equal the recorded ones; only fullpath differs (/comfyui is the fake's root)."""
    assert list(ours) == list(traced)
    for node_id, ui in ours.items():
        for key, items in ui.items():
            for item, traced_item in zip(items, traced[node_id][key], strict=True):
                if isinstance(item, dict) and "fullpath" in item:
                    assert item["fullpath"] == str(fake.root / item["type"] / item["subfolder"] / item["filename"])
                    item, traced_item = ({k: v for k, v in d.items() if k != "fullpath"} for d in (item, traced_item))
                assert item == traced_item


# -- the replayed session ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> SimpleNamespace:
    """The recorded session, in its order, against one fake: numbers and caching carry over as recorded."""
    base = tmp_path_factory.mktemp("replay")
    inputs = base / "inputs"
    inputs.mkdir()
    write_png(inputs / "face.png")
    write_wav(inputs / "speech.wav", 3.0)
    runs: dict[str, SimpleNamespace] = {}
    with FakeComfyUI(base / "comfyui") as fake:
        error_graph = with_inputs(traced_graph("execution_error_missing_model_download"), inputs)
        refused = copy.deepcopy(error_graph)
        refused["125"]["inputs"]["audio"], refused["284"]["inputs"]["image"] = "woman.wav", "woman.jpg"
        runs["validation_error_400"] = Recorder(fake.url).run(refused)

        traced_error = next(m["msg"]["data"] for m in load_trace("execution_error_missing_model_download")
                            if m["kind"] == "ws" and m["msg"]["type"] == "execution_error")
        fake.scenario, fake.fault_node = "execution_error", "137"
        fake.error_type, fake.error_message = traced_error["exception_type"], traced_error["exception_message"]
        fake.error_traceback = traced_error["traceback"]
        runs["execution_error_missing_model_download"] = Recorder(fake.url).run(error_graph)

        fake.scenario, fake.fault_node = "success_vhs", None
        recorder = Recorder(fake.url)
        runs["success_vhs_videocombine"] = recorder.run(smoke_graph("vhs", inputs))
        output = fake.history[runs["success_vhs_videocombine"].prompt_id]["outputs"]["5"]["gifs"][0]
        view = requests.get(fake.url + "/view", params={k: output[k] for k in ("filename", "subfolder", "type")},
                            timeout=TIMEOUT)
        runs["success_vhs_videocombine"].view = view

        runs["success_native_savevideo"] = Recorder(fake.url).run(smoke_graph("native", inputs))

        fake.scenario = "interrupt"
        interrupter = Recorder(fake.url)

        def interrupt_during_node_4(message: dict) -> None:
            if message["type"] == "executing" and message["data"]["node"] == "4":
                interrupter.http("POST", "/interrupt")

        runs["interrupted"] = interrupter.run(with_inputs(traced_graph("interrupted"), inputs), interrupt_during_node_4)

        fake.scenario = "success_vhs"  # the rerun trace's graph as recorded: no role titles at all
        runs["rerun_same_prompt"] = Recorder(fake.url).run(with_inputs(traced_graph("rerun_same_prompt"), inputs))
    return SimpleNamespace(runs=runs, fake=fake, inputs=inputs)


TRACE_NAMES = ["validation_error_400", "execution_error_missing_model_download", "success_vhs_videocombine",
               "success_native_savevideo", "interrupted", "rerun_same_prompt"]
SAME_GRAPH_AS_RECORDED = ["success_vhs_videocombine", "success_native_savevideo", "interrupted", "rerun_same_prompt"]


@pytest.mark.parametrize("name", TRACE_NAMES)
def test_http_exchanges_match_the_trace(session, name):
    ours, traced = http_records(session.runs[name].records), http_records(load_trace(name))
    assert [(r["method"], r["path"].split("/")[1], r["status"]) for r in ours] == \
        [(r["method"], r["path"].split("/")[1], r["status"]) for r in traced]
    post, traced_post = ours[0], traced[0]
    if post["status"] == 400:
        assert post["body"] == traced_post["body"]  # ComfyUI's exact 400, node_errors and all
    else:
        assert key_tree(post["body"]) == key_tree(traced_post["body"])
        assert post["body"]["number"] == traced_post["body"]["number"]  # the session's numbering carried over


@pytest.mark.parametrize("name", TRACE_NAMES[1:])
def test_message_sequence_and_fields_match_the_trace(session, name):
    ours, traced = ws_messages(session.runs[name].records), ws_messages(load_trace(name))
    assert coarse_shape(ours) == coarse_shape(traced)
    assert fields_by_type(ours) == fields_by_type(traced)
    timestamps = [m["data"]["timestamp"] for m in ours if "timestamp" in m["data"]]
    assert timestamps and all(abs(ts - time.time() * 1000) < 120_000 for ts in timestamps)  # ms, not s


@pytest.mark.parametrize("name", SAME_GRAPH_AS_RECORDED)
def test_same_graph_gives_the_recorded_messages_one_for_one(session, name):
    ours, traced = ws_messages(session.runs[name].records), ws_messages(load_trace(name))
    assert exact_tokens(ours) == exact_tokens(traced)


@pytest.mark.parametrize("name", TRACE_NAMES[1:])
def test_history_entry_matches_the_trace(session, name):
    entry, traced = history_entry(session.runs[name].records), history_entry(load_trace(name))
    assert_history_like(entry, traced)
    if name in SAME_GRAPH_AS_RECORDED:
        assert_outputs_equal(entry["outputs"], traced["outputs"], session.fake)


def test_execution_error_carries_every_recorded_field(session):
    name = "execution_error_missing_model_download"
    (ours,) = [m["data"] for m in ws_messages(session.runs[name].records) if m["type"] == "execution_error"]
    (traced,) = [m["data"] for m in ws_messages(load_trace(name)) if m["type"] == "execution_error"]
    assert list(ours) == list(traced)
    assert (ours["node_id"], ours["node_type"], ours["current_inputs"]) == \
        (traced["node_id"], traced["node_type"], traced["current_inputs"])
    assert sorted(ours["current_outputs"]) == sorted(traced["current_outputs"])


def test_binary_frames_are_sent_and_must_be_skipped(session):
    records = session.runs["success_vhs_videocombine"].records
    assert any(r["kind"] == "ws_binary" and r["event"] == 3 for r in records)


# -- the rendered MP4 --------------------------------------------------------------------------


def probe(path: Path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames = sum(1 for _ in container.decode(video))
        return {"codec": video.codec_context.name, "width": video.width, "height": video.height,
                "fps": float(video.average_rate), "frames": frames,
                "audio_seconds": float(audio.duration * audio.time_base) if audio is not None else None}


def test_vhs_output_is_a_real_mp4_with_the_audio_trimmed_to_the_video(session):
    fake = session.fake
    assert probe(fake.temp_dir / "smoke_00001-audio.mp4") == {"codec": "h264", "width": 256, "height": 256,
                                                             "fps": 25.0, "frames": 50,
                                                             "audio_seconds": pytest.approx(2.0, abs=0.1)}
    assert probe(fake.temp_dir / "smoke_00001.mp4")["audio_seconds"] is None  # VHS's silent copy
    assert (fake.temp_dir / "smoke_00001.png").is_file()
    view = session.runs["success_vhs_videocombine"].view
    assert view.status_code == 200 and view.headers["Content-Type"] == "video/mp4"
    assert view.content == (fake.temp_dir / "smoke_00001-audio.mp4").read_bytes()


def test_native_output_and_the_unannotated_rerun_render_too(session):
    fake = session.fake
    native = probe(fake.output_dir / "video" / "smoke_00001_.mp4")
    assert (native["width"], native["height"], native["frames"], native["fps"]) == (256, 256, 50, 25.0)
    assert native["audio_seconds"] == pytest.approx(2.0, abs=0.1)
    rerun = probe(fake.temp_dir / "smoke_00002-audio.mp4")
    assert (rerun["width"], rerun["frames"], rerun["audio_seconds"]) == (256, 50, pytest.approx(2.0, abs=0.1))


@pytest.mark.parametrize("kind,expected", [
    ("vhs", {"type": "output", "subfolder": "infinitetalk", "filename": "job-7_00001-audio.mp4"}),
    ("native", {"type": "output", "subfolder": "infinitetalk", "filename": "job-7_00001_.mp4"}),
])
def test_render_follows_the_roles_and_pads_short_audio(fake_comfy, tmp_path, kind, expected):
    graph = smoke_graph(kind, tmp_path)
    graph["1"]["inputs"]["image"] = str(write_png(tmp_path / "portrait.png", (300, 200)))
    graph["2"]["inputs"]["audio"] = str(write_wav(tmp_path / "short.wav", 0.5, rate=22050))
    graph["3"]["inputs"].update(width=64, height=48)
    graph["4"]["inputs"]["amount"] = 30
    output = graph["5" if kind == "vhs" else "7"]["inputs"]
    output.update(filename_prefix="infinitetalk/job-7", **({"save_output": True} if kind == "vhs" else {}))
    run = Recorder(fake_comfy.url).run(graph)
    (ui,) = history_entry(run.records)["outputs"].values()
    item = (ui.get("gifs") or ui.get("images"))[0]
    assert {k: item[k] for k in expected} == expected
    video = probe(fake_comfy.output_dir / "infinitetalk" / item["filename"])
    assert (video["width"], video["height"], video["frames"], video["fps"]) == (64, 48, 30, 25.0)
    assert video["audio_seconds"] == pytest.approx(1.2, abs=0.1)  # 0.5 s of speech padded to 30 frames


# -- refusals like ComfyUI's -------------------------------------------------------------------


def post_prompt(fake: FakeComfyUI, graph: Any, **extra: Any) -> requests.Response:
    return requests.post(fake.url + "/prompt", json={"prompt": graph, "client_id": "c", **extra}, timeout=TIMEOUT)


def test_missing_input_file_is_refused_with_comfyuis_400(fake_comfy, tmp_path):
    write_wav(tmp_path / "speech.wav", 1.0)
    graph = smoke_graph("vhs", tmp_path)  # face.png was never written
    response = post_prompt(fake_comfy, graph)
    assert response.status_code == 400
    assert response.json() == {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                  "details": "", "extra_info": {}},
        "node_errors": {"1": {"errors": [{
            "type": "custom_validation_failed", "message": "Custom validation failed for node",
            "details": f"image - Invalid image file: {tmp_path}/face.png", "extra_info": {"input_name": "image"}}],
            "dependent_outputs": ["5"], "class_type": "LoadImage"}}}


def test_node_without_class_type_or_unknown_class_is_invalid_prompt(fake_comfy, tmp_path):
    missing = post_prompt(fake_comfy, {"1": {"inputs": {}}})
    unknown = post_prompt(fake_comfy, {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    no_prompt = requests.post(fake_comfy.url + "/prompt", json={"client_id": "c"}, timeout=TIMEOUT)
    assert [r.status_code for r in (missing, unknown, no_prompt)] == [400, 400, 400]
    assert missing.json()["error"]["type"] == unknown.json()["error"]["type"] == "invalid_prompt"
    assert missing.json()["node_errors"] == {} and "NoSuchNode" in unknown.json()["error"]["message"]
    assert no_prompt.json()["error"]["type"] == "no_prompt"


def test_reject_and_validation_scenarios_refuse_a_good_graph(fake_comfy, tmp_path):
    write_png(tmp_path / "face.png")
    write_wav(tmp_path / "speech.wav", 1.0)
    fake_comfy.scenario = "reject_400"
    rejected = post_prompt(fake_comfy, smoke_graph("vhs", tmp_path))
    fake_comfy.scenario = "validation_400"
    invalid = post_prompt(fake_comfy, smoke_graph("vhs", tmp_path))
    assert (rejected.status_code, rejected.json()["node_errors"]) == (400, {})
    assert invalid.status_code == 400 and set(invalid.json()["node_errors"]) == {"1", "2"}
    assert fake_comfy.history == {}


def test_view_refuses_paths_outside_its_folders(fake_comfy):
    def status(**params: str) -> int:
        return requests.get(fake_comfy.url + "/view", params=params, timeout=TIMEOUT).status_code

    assert status(filename="/etc/passwd") == 400
    assert status(filename="../secret.mp4", type="output") == 400
    assert status(filename="x.mp4", type="nowhere") == 400
    assert status(filename="x.mp4", subfolder="../..", type="output") == 403
    assert status(filename="missing.mp4", type="temp") == 404


def test_identical_prompt_is_answered_from_the_cache_with_the_old_file(fake_comfy, tmp_path):
    write_png(tmp_path / "face.png")
    write_wav(tmp_path / "speech.wav", 1.0)
    first = Recorder(fake_comfy.url).run(smoke_graph("vhs", tmp_path))
    second = Recorder(fake_comfy.url).run(smoke_graph("vhs", tmp_path))
    tokens = exact_tokens(ws_messages(second.records))
    assert ("execution_cached", ("1", "2", "3", "4", "5")) in tokens
    assert not [t for t in tokens if t[0] == "executing" and t[1] is not None]
    assert history_entry(second.records)["outputs"] == history_entry(first.records)["outputs"]


def test_preview_any_shows_its_value_in_history(fake_comfy):
    graph = {"1": {"class_type": "INTConstant", "inputs": {"value": 81}},
             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    run = Recorder(fake_comfy.url).run(graph)
    assert history_entry(run.records)["outputs"] == {"2": {"text": ["81"]}}


def test_stop_releases_the_port_and_the_thread(tmp_path):
    fake = FakeComfyUI(tmp_path / "comfyui").start()
    url, thread = fake.url, fake._thread
    fake.stop()
    fake.stop()  # twice is harmless
    assert not thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/prompt", timeout=2)


def test_system_stats_and_object_info(fake_comfy):
    stats = requests.get(fake_comfy.url + "/system_stats", timeout=TIMEOUT).json()
    assert stats["system"]["comfyui_version"] == "0.3.64" and stats["devices"][0]["type"] == "cuda"
    info = requests.get(fake_comfy.url + "/object_info", timeout=TIMEOUT).json()
    assert info["VHS_VideoCombine"]["output_node"] is True
    assert list(requests.get(fake_comfy.url + "/object_info/LoadAudio", timeout=TIMEOUT).json()) == ["LoadAudio"]


# -- failure scenarios ------------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def submit_with_socket(fake: FakeComfyUI, graph: dict) -> tuple[Recorder, str]:
    recorder = Recorder(fake.url)
    response = recorder.http("POST", "/prompt", json={"prompt": graph, "client_id": recorder.client_id})
    assert response.status_code == 200
    return recorder, response.json()["prompt_id"]


def history_of(fake: FakeComfyUI, prompt_id: str) -> dict:
    return requests.get(f"{fake.url}/history/{prompt_id}", timeout=TIMEOUT).json().get(prompt_id, {})


@pytest.fixture
def smoke(tmp_path) -> dict:
    write_png(tmp_path / "face.png")
    write_wav(tmp_path / "speech.wav", 1.0)
    return smoke_graph("vhs", tmp_path)


def test_ws_drop_cuts_the_socket_but_the_prompt_finishes(fake_comfy, smoke):
    fake_comfy.scenario = "ws_drop"
    recorder, prompt_id = submit_with_socket(fake_comfy, smoke)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        while True:
            recorder.read()
    entry = wait_until(lambda: history_of(fake_comfy, prompt_id))
    assert entry["status"]["status_str"] == "success" and entry["outputs"]["5"]["gifs"]
    again = Recorder(fake_comfy.url)  # a reconnect is welcome
    assert again.records[0]["msg"]["data"]["sid"] == again.client_id


def test_die_closes_the_port_and_every_connection(fake_comfy, smoke):
    fake_comfy.scenario = "die"
    recorder, _ = submit_with_socket(fake_comfy, smoke)
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
        while True:
            recorder.read()
    assert fake_comfy.died.wait(TIMEOUT)
    with pytest.raises(requests.ConnectionError):
        requests.get(fake_comfy.url + "/system_stats", timeout=2)


def test_hang_ignores_an_interrupt_for_another_prompt_and_obeys_its_own(fake_comfy, smoke):
    fake_comfy.scenario = "hang"
    recorder, prompt_id = submit_with_socket(fake_comfy, smoke)
    requests.post(fake_comfy.url + "/interrupt", json={"prompt_id": "someone-else"}, timeout=TIMEOUT)
    time.sleep(0.3)
    assert history_of(fake_comfy, prompt_id) == {}
    requests.post(fake_comfy.url + "/interrupt", json={"prompt_id": prompt_id}, timeout=TIMEOUT)
    entry = wait_until(lambda: history_of(fake_comfy, prompt_id))
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert fake_comfy.interrupts == [{"prompt_id": "someone-else"}, {"prompt_id": prompt_id}]
    types = [m["type"] for m in ws_messages(recorder.records)]
    while types[-1:] != ["executing"] or recorder.records[-1]["msg"]["data"]["node"] is not None:
        recorder.read()
        types = [m["type"] for m in ws_messages(recorder.records)]
    assert types[-3:] == ["execution_interrupted", "status", "executing"]


def test_queue_delete_removes_a_pending_prompt(fake_comfy, smoke):
    fake_comfy.scenario = "hang"
    _, running = submit_with_socket(fake_comfy, smoke)
    _, pending = submit_with_socket(fake_comfy, smoke)
    queue = requests.get(fake_comfy.url + "/queue", timeout=TIMEOUT).json()
    assert [q[1] for q in queue["queue_running"]] == [running] and [q[1] for q in queue["queue_pending"]] == [pending]
    requests.post(fake_comfy.url + "/queue", json={"delete": [pending]}, timeout=TIMEOUT)
    assert requests.get(fake_comfy.url + "/queue", timeout=TIMEOUT).json()["queue_pending"] == []
    assert fake_comfy.queue_deletes == [{"delete": [pending]}]
    requests.post(fake_comfy.url + "/interrupt", json={}, timeout=TIMEOUT)
    wait_until(lambda: history_of(fake_comfy, running))
    assert history_of(fake_comfy, pending) == {}


def test_standalone_process_serves_and_stops_quietly_on_sigterm(tmp_path):
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    script = Path(__file__).resolve().parents[1] / "testsupport" / "fake_comfyui.py"
    process = subprocess.Popen([sys.executable, str(script), "--port", str(port), "--root", str(tmp_path / "c")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def answers() -> bool:
            try:
                with requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=1) as response:
                    return response.ok
            except requests.ConnectionError:
                return process.poll() is not None
        wait_until(answers)
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert (process.returncode, stdout, stderr) == (0, "", "")


# -- the fake's own description of the nodes it emulates ----------------------------------------


OBJECT_INFO = json.loads((SHARED / "object_info.json").read_text())
REPO = Path(__file__).resolve().parents[1]


def test_the_fake_imports_nothing_from_the_worker():
    code = ("import sys; import testsupport.fake_comfyui; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('infinitetalk_worker', 'handler')))")
    found = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"


@pytest.mark.parametrize("class_type", sorted(NODE_CLASSES))
def test_each_emulated_class_reads_inputs_and_gives_outputs_as_object_info_says(class_type):
    spec, info = NODE_CLASSES[class_type], OBJECT_INFO[class_type]
    listed = {**(info["input"].get("required") or {}), **(info["input"].get("optional") or {})}
    assert set(spec.inputs) <= set(listed), set(spec.inputs) - set(listed)
    assert not set(spec.widgets) & set(listed)  # widgets are only the inputs /object_info does not list
    assert list(spec.outputs) == info["output"]
    assert spec.output_node == bool(info.get("output_node"))


def production_graph(name: str) -> dict:
    return json.loads((REPO / "workflows" / name).read_text())


def only(graph: dict, class_type: str) -> dict:
    (node,) = [n for n in graph.values() if n["class_type"] == class_type]
    return node["inputs"]


def preview(graph: dict, source: list) -> dict:
    return {**graph, "preview": {"class_type": "PreviewAny", "inputs": {"source": source}}}


def output_video(fake: FakeComfyUI, run: SimpleNamespace) -> dict:
    outputs = history_entry(run.records)["outputs"]
    (item,) = [ui["gifs"][0] for ui in outputs.values() if "gifs" in ui]
    return probe(Path(item["fullpath"]))


@pytest.mark.parametrize("seconds, num_frames, expected, windows", [
    pytest.param(1.5, 81, 37, 1, id="1.5s-truncated-to-37"),  # int(1.5 * 25) = 37, not 38
    pytest.param(4.0, 81, 81, 1, id="capped-by-num_frames"),
    pytest.param(7.0, 175, 175, 3, id="three-windows"),  # 81 + 72 + 72 = 225 frames made, cut to 175
])
def test_production_i2v_graph_frames_follow_the_audio_node_and_size_the_resize_node(
        fake_comfy, tmp_path, seconds, num_frames, expected, windows):
    graph = production_graph("i2v_single.json")
    only(graph, "LoadImage")["image"] = str(write_png(tmp_path / "face.png", (300, 200)))
    voice = str(write_wav(tmp_path / "voice.wav", seconds))
    for load in (n["inputs"] for n in graph.values() if n["class_type"] == "LoadAudio"):  # the voice, the soundtrack
        load["audio"] = voice
    only(graph, "ImageResizeKJv2").update(width=200, height=120)  # divisible_by 16: 192 x 112
    only(graph, "MultiTalkWav2VecEmbeds")["num_frames"] = num_frames
    sampler_id = next(i for i, n in graph.items() if n["class_type"] == "WanVideoSampler")
    run = Recorder(fake_comfy.url).run(graph)
    video = output_video(fake_comfy, run)
    assert (video["width"], video["height"], video["frames"], video["fps"]) == (192, 112, expected, 25.0)
    assert video["audio_seconds"] == pytest.approx(expected / 25, abs=0.05)
    steps = [m["data"]["max"] for m in ws_messages(run.records)
             if m["type"] == "progress" and m["data"]["node"] == sampler_id]
    assert steps and set(steps) == {graph[sampler_id]["inputs"]["steps"] * windows}


def test_add_mode_counts_both_voices_and_para_the_longer(fake_comfy, tmp_path):
    graph = production_graph("i2v_multi.json")
    loads = [n["inputs"] for n in graph.values() if n["class_type"] == "LoadAudio"]  # voice 1, voice 2, soundtrack
    for index, load in enumerate(loads):
        load["audio"] = str(write_wav(tmp_path / f"audio{index}.wav", 1.0 + 0.5 * index))
    only(graph, "LoadImage")["image"] = str(write_png(tmp_path / "face.png"))
    for index, node in enumerate(n for n in graph.values() if n["class_type"] == "LoadImageMask"):
        Image.new("L", (64, 64), 255).save(tmp_path / f"mask{index}.png")
        node["inputs"]["image"] = str(tmp_path / f"mask{index}.png")
    embeds_id = next(i for i, n in graph.items() if n["class_type"] == "MultiTalkWav2VecEmbeds")
    counted = {}
    for mode in ("para", "add"):
        graph[embeds_id]["inputs"].update(multi_audio_type=mode, num_frames=1000)
        run = Recorder(fake_comfy.url).run(preview(graph, [embeds_id, 2]))
        counted[mode] = history_entry(run.records)["outputs"]["preview"]["text"]
    assert counted == {"para": ["37"], "add": ["62"]}  # voices of 1.0 s and 1.5 s: int(1.5 * 25), int(2.5 * 25)


def test_vhs_load_video_rounds_size_and_frames_as_its_format_says(fake_comfy, tmp_path):
    from testsupport.media_factory import make_video
    source = make_video(tmp_path / "clip.mp4", 2.0, (96, 64))  # 50 frames at 25 fps
    graph = {"1": {"class_type": "VHS_LoadVideo", "inputs": {
        "video": str(source), "force_rate": 25, "custom_width": 205, "custom_height": 120, "frame_load_cap": 0,
        "skip_first_frames": 0, "select_every_nth": 1, "format": "Wan"}},
        "2": {"class_type": "GetImageSizeAndCount", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 2]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["1", 1]}}}
    outputs = history_entry(Recorder(fake_comfy.url).run(graph).records)["outputs"]
    assert [outputs[n]["text"] for n in ("3", "4", "5")] == [["208"], ["120"], ["49"]]  # 8-pixel grid, 4k+1
    graph["1"]["inputs"].update(format="None", force_rate=10, frame_load_cap=7, skip_first_frames=2)
    outputs = history_entry(Recorder(fake_comfy.url).run(graph).records)["outputs"]
    assert [outputs[n]["text"] for n in ("3", "4", "5")] == [["205"], ["120"], ["7"]]


def test_a_node_fed_by_a_class_the_fake_does_not_emulate_fails_like_a_node(fake_comfy, tmp_path):
    graph = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "x.safetensors"}},
             "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 2}},
             "3": {"class_type": "VHS_VideoCombine", "inputs": {
                 "images": ["2", 0], "frame_rate": 25, "loop_count": 0, "filename_prefix": "x",
                 "format": "video/h264-mp4", "pingpong": False, "save_output": True}}}
    run = Recorder(fake_comfy.url).run(graph)
    (error,) = [m["data"] for m in ws_messages(run.records) if m["type"] == "execution_error"]
    assert error["node_id"] == "2" and "input 'image' is Opaque, not Images" in error["exception_message"]
