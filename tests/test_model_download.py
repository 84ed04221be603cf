"""download-models against a real HTTP server on loopback that speaks Range and Hugging Face's hash headers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from infinitetalk_worker import model_download
from infinitetalk_worker.model_download import (
    CACHE_NAME,
    SHA256_PATTERN,
    ModelDownloadError,
    auth_headers,
    download_models,
    load_manifest,
    select_used,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


class FileServer:
    """Serves named byte strings; can drop a connection midway, slow down, or report a hub hash on HEAD."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hub_sha: dict[str, str] = {}
        self.drop_first_get_after: dict[str, int] = {}
        self.delay_s = 0.0
        self.requests: list[tuple[str, str, str | None]] = []
        self.body_bytes_sent = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def gets(self, name: str) -> list[str | None]:
        return [rng for method, path, rng in self.requests if method == "GET" and path == f"/{name}"]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def do_HEAD(self):
                name = self.path.lstrip("/")
                server.requests.append(("HEAD", self.path, None))
                if name not in server.files:
                    self.send_error(404)
                    return
                # Like huggingface.co/.../resolve/...: a redirect that carries the LFS hash and size.
                self.send_response(302)
                self.send_header("Location", self.path)
                if name in server.hub_sha:
                    self.send_header("X-Linked-Etag", f'"{server.hub_sha[name]}"')
                    self.send_header("X-Linked-Size", str(len(server.files[name])))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append(("GET", self.path, rng))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                drop_at = server.drop_first_get_after.pop(name, None)
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    if drop_at is not None:
                        self.wfile.write(body[:drop_at])
                        self.wfile.flush()
                        self.close_connection = True
                        server.body_bytes_sent += drop_at
                        return
                    self.wfile.write(body)
                    server.body_bytes_sent += len(body)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        return Handler


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    files = FileServer()
    files.thread.start()
    yield files
    files.httpd.shutdown()
    files.httpd.server_close()


def _content(name: str, size: int) -> bytes:
    """Deterministic bytes that differ per file and per position."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def _publish(server: FileServer, name: str, length: int, folder: str = "diffusion_models", **row) -> dict:
    """Serve ``length`` bytes as ``name``; the manifest row is right unless ``row`` overrides a key."""
    data = _content(name, length)
    server.files[name] = data
    entry = {"file": name, "folder": folder, "url": server.url(name),
             "sha256": hashlib.sha256(data).hexdigest(), "size": length}
    entry.update(row)
    return {k: v for k, v in entry.items() if v is not None}


def _manifest(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "models.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _fetch(tmp_path: Path, rows: list[dict], **options):
    models = tmp_path / "models"
    options.setdefault("retry_wait_s", 0.0)
    return download_models(load_manifest(_manifest(tmp_path, rows)), models, **options), models


def test_fresh_download_puts_verified_files_in_their_folders(server, tmp_path):
    rows = [_publish(server, "wan.safetensors", 300_000), _publish(server, "vae.safetensors", 5_000, folder="vae")]

    outcomes, models = _fetch(tmp_path, rows)

    assert outcomes == {"diffusion_models/wan.safetensors": "downloaded", "vae/vae.safetensors": "downloaded"}
    assert (models / "diffusion_models/wan.safetensors").read_bytes() == server.files["wan.safetensors"]
    assert (models / "vae/vae.safetensors").read_bytes() == server.files["vae.safetensors"]
    assert not list(models.rglob("*.part"))


def test_a_partial_file_from_an_earlier_run_is_resumed_not_restarted(server, tmp_path):
    rows = [_publish(server, "wan.safetensors", 400_000)]
    part = tmp_path / "models/diffusion_models/wan.safetensors.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(server.files["wan.safetensors"][:150_000])

    outcomes, models = _fetch(tmp_path, rows)

    assert outcomes["diffusion_models/wan.safetensors"] == "downloaded"
    assert server.gets("wan.safetensors") == ["bytes=150000-"]
    assert server.body_bytes_sent == 250_000
    assert (models / "diffusion_models/wan.safetensors").read_bytes() == server.files["wan.safetensors"]
    assert not part.exists()


def test_a_connection_dropped_midway_resumes_in_the_same_run(server, tmp_path):
    rows = [_publish(server, "wan.safetensors", 2_000_000)]
    server.drop_first_get_after["wan.safetensors"] = 700_000

    _, models = _fetch(tmp_path, rows)

    ranges = server.gets("wan.safetensors")
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert (models / "diffusion_models/wan.safetensors").read_bytes() == server.files["wan.safetensors"]


def test_a_sha256_mismatch_is_an_error_and_leaves_no_file_under_either_name(server, tmp_path):
    rows = [_publish(server, "wan.safetensors", 50_000, sha256="0" * 64)]

    with pytest.raises(ModelDownloadError) as caught:
        _fetch(tmp_path, rows)

    message = str(caught.value)
    assert "diffusion_models/wan.safetensors" in message and "SHA-256" in message
    folder = tmp_path / "models/diffusion_models"
    assert not (folder / "wan.safetensors").exists()
    assert not (folder / "wan.safetensors.part").exists()


def test_a_size_mismatch_is_an_error(server, tmp_path):
    rows = [_publish(server, "wan.safetensors", 50_000, size=60_000, sha256=None)]

    with pytest.raises(ModelDownloadError, match="size is 50000 bytes, expected 60000"):
        _fetch(tmp_path, rows)
    assert not (tmp_path / "models/diffusion_models/wan.safetensors").exists()


def test_without_a_manifest_hash_the_hubs_reported_hash_is_checked(server, tmp_path):
    good = _publish(server, "good.safetensors", 40_000, sha256=None, size=None)
    bad = _publish(server, "bad.safetensors", 40_000, sha256=None, size=None)
    server.hub_sha["good.safetensors"] = hashlib.sha256(server.files["good.safetensors"]).hexdigest()
    server.hub_sha["bad.safetensors"] = "f" * 64

    with pytest.raises(ModelDownloadError) as caught:
        _fetch(tmp_path, [good, bad])

    assert "bad.safetensors: SHA-256" in str(caught.value)
    assert "good.safetensors" not in str(caught.value)
    folder = tmp_path / "models/diffusion_models"
    assert (folder / "good.safetensors").read_bytes() == server.files["good.safetensors"]
    assert not (folder / "bad.safetensors").exists()


def test_a_second_run_skips_verified_files_without_any_request(server, tmp_path):
    rows = [_publish(server, "wan.safetensors", 100_000), _publish(server, "lora.safetensors", 10_000, folder="loras")]
    _fetch(tmp_path, rows)
    server.requests.clear()

    outcomes, models = _fetch(tmp_path, rows)

    assert set(outcomes.values()) == {"skipped"}
    assert server.requests == []
    assert (models / CACHE_NAME).is_file()


def test_a_file_changed_after_verification_is_checked_again_and_replaced(server, tmp_path):
    rows = [_publish(server, "wan.safetensors", 100_000)]
    _, models = _fetch(tmp_path, rows)
    target = models / "diffusion_models/wan.safetensors"
    target.write_bytes(b"x" * 100_000)  # same size, other bytes, new mtime

    outcomes, _ = _fetch(tmp_path, rows)

    assert outcomes["diffusion_models/wan.safetensors"] == "downloaded"
    assert target.read_bytes() == server.files["wan.safetensors"]


def test_a_good_file_placed_by_hand_is_verified_not_downloaded(server, tmp_path):
    rows = [_publish(server, "wan.safetensors", 100_000)]
    target = tmp_path / "models/diffusion_models/wan.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(server.files["wan.safetensors"])

    outcomes, _ = _fetch(tmp_path, rows)

    assert outcomes["diffusion_models/wan.safetensors"] == "verified"
    assert server.gets("wan.safetensors") == []


def test_several_files_download_at_the_same_time(server, tmp_path):
    rows = [_publish(server, f"part{i}.safetensors", 20_000) for i in range(4)]
    server.delay_s = 0.3

    outcomes, models = _fetch(tmp_path, rows, jobs=4)

    assert set(outcomes.values()) == {"downloaded"}
    assert server.max_in_flight >= 2
    for i in range(4):
        assert (models / f"diffusion_models/part{i}.safetensors").read_bytes() == server.files[f"part{i}.safetensors"]


def test_a_missing_remote_file_names_the_file_and_the_status(server, tmp_path):
    rows = [{"file": "gone.safetensors", "folder": "loras", "url": server.url("gone.safetensors"),
             "sha256": "a" * 64, "size": 10}]

    with pytest.raises(ModelDownloadError, match=r"loras/gone.safetensors: GET .* answered HTTP 404"):
        _fetch(tmp_path, rows)


def test_not_enough_disk_space_fails_before_downloading(server, tmp_path):
    rows = [_publish(server, "huge.safetensors", 10, size=10**17, sha256="a" * 64)]

    with pytest.raises(ModelDownloadError, match="GB free"):
        _fetch(tmp_path, rows)
    assert server.requests == []


def test_the_free_space_check_counts_a_file_whose_size_only_the_hub_gives(server, tmp_path, monkeypatch):
    row = _publish(server, "multi.safetensors", 50_000, sha256=None, size=None)
    server.hub_sha["multi.safetensors"] = hashlib.sha256(server.files["multi.safetensors"]).hexdigest()
    usage = model_download.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(model_download.shutil, "disk_usage", lambda path: usage._replace(free=40_000))

    with pytest.raises(ModelDownloadError, match="0.0 GB free but the missing model files need 0.0 GB"):
        _fetch(tmp_path, [row])
    assert server.gets("multi.safetensors") == [], "refused before downloading"


def test_a_file_the_manifest_does_not_pin_is_recorded_at_first_download_and_a_different_one_refused(server, tmp_path):
    row = _publish(server, "mel.safetensors", 30_000, sha256=None, size=None)  # and no hub hash either
    _, models = _fetch(tmp_path, [row])
    record = json.loads((models / model_download.RECORD_NAME).read_text())
    first = server.files["mel.safetensors"]
    assert record["diffusion_models/mel.safetensors"] == {
        "url": row["url"], "sha256": hashlib.sha256(first).hexdigest(), "size": len(first)}

    # Upstream serves other bytes under the same URL; the local copy is gone (a new disk, a bad file removed).
    server.files["mel.safetensors"] = _content("something else", len(first))
    (models / "diffusion_models" / "mel.safetensors").unlink()
    with pytest.raises(ModelDownloadError) as caught:
        _fetch(tmp_path, [row])

    assert "mel.safetensors: SHA-256 is" in str(caught.value)
    assert f"recorded at its first download in {models / model_download.RECORD_NAME}" in str(caught.value)
    assert not (models / "diffusion_models" / "mel.safetensors").exists()
    assert json.loads((models / model_download.RECORD_NAME).read_text()) == record, "the record is never replaced"


def test_a_file_placed_by_hand_that_differs_from_the_record_is_replaced_by_the_recorded_one(server, tmp_path):
    row = _publish(server, "mel.safetensors", 30_000, sha256=None, size=None)
    _, models = _fetch(tmp_path, [row])
    dest = models / "diffusion_models" / "mel.safetensors"
    dest.write_bytes(_content("hand-made", 30_000))
    (models / CACHE_NAME).unlink()

    outcomes, _ = _fetch(tmp_path, [row])

    assert outcomes == {"diffusion_models/mel.safetensors": "downloaded"}
    assert dest.read_bytes() == server.files["mel.safetensors"]


def test_the_shipped_manifest_pins_every_url_to_a_revision_and_records_sizes_and_hashes():
    rows = json.loads((REPO_ROOT / "workflows" / "models.json").read_text())
    hub = r"https://huggingface\.co/[\w.-]+/[\w.-]+/resolve/[0-9a-f]{40}/(.+/)?"
    # Kokoro's ONNX files come from the kokoro-onnx project's own release (no revision of a hub mirror is on record).
    release = r"https://github\.com/thewh1teagle/kokoro-onnx/releases/download/model-files-v1\.0/"
    for row in rows:
        prefix = release if row["folder"] == "kokoro" else hub
        assert re.fullmatch(prefix + re.escape(row["file"]), row["url"]), row["url"]
        assert SHA256_PATTERN.match(row["sha256"] or ""), f"{row['file']} has no SHA-256"
        assert isinstance(row["size"], int) and row["size"] > 0, f"{row['file']} has no size"


def test_only_files_named_by_the_workflows_are_selected(server, tmp_path):
    rows = [_publish(server, "used.safetensors", 1000), _publish(server, "unused.safetensors", 1000)]
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    loader = {"class_type": "WanVideoModelLoader", "inputs": {"model": "used.safetensors", "base_precision": "bf16"}}
    graph = {"1": loader}
    (workflows / "i2v_single.json").write_text(json.dumps(graph), encoding="utf-8")

    chosen = select_used(load_manifest(_manifest(tmp_path, rows)), workflows)

    assert [entry.file for entry in chosen] == ["used.safetensors"]


@pytest.mark.parametrize(
    "row, complaint",
    [
        ({"file": "a.safetensors", "folder": "vae"}, "'url'"),
        ({"file": "../a.safetensors", "folder": "vae", "url": "http://x/a"}, "without '..'"),
        ({"file": "a.safetensors", "folder": "vae", "url": "http://x/a", "sha256": "abc"}, "64 hexadecimal"),
        ({"file": "a.safetensors", "folder": "vae", "url": "http://x/a", "size": -1}, "positive whole number"),
    ],
)
def test_a_malformed_manifest_is_rejected_naming_the_entry(tmp_path, row, complaint):
    with pytest.raises(ModelDownloadError) as caught:
        load_manifest(_manifest(tmp_path, [row]))
    assert "entry 0" in str(caught.value) and complaint in str(caught.value)


def test_the_hugging_face_token_is_sent_to_hugging_face_only():
    assert auth_headers("https://huggingface.co/Kijai/x/resolve/main/a.safetensors", "hf_secret") == {
        "Authorization": "Bearer hf_secret"
    }
    assert auth_headers("https://example.com/a.safetensors", "hf_secret") == {}
    assert auth_headers("https://huggingface.co.evil.example/a", "hf_secret") == {}
    assert auth_headers("https://huggingface.co/a", None) == {}


def _run_script(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The way the Dockerfile runs it: the module file as a plain script, outside the package."""
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_DIR", "COMFYUI_DIR")}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", **(env_extra or {})})
    script = REPO_ROOT / "infinitetalk_worker" / "model_download.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=120)


def test_the_standalone_script_downloads_into_comfyui_models_by_default(server, tmp_path):
    manifest = _manifest(tmp_path, [_publish(server, "wan.safetensors", 30_000)])
    comfy = tmp_path / "ComfyUI"

    result = _run_script("download-models", "--manifest", str(manifest), env_extra={"COMFYUI_DIR": str(comfy)})

    assert result.returncode == 0, result.stderr
    assert (comfy / "models/diffusion_models/wan.safetensors").read_bytes() == server.files["wan.safetensors"]
    assert "1 downloaded" in result.stderr


def test_the_standalone_script_exits_non_zero_with_the_reason(server, tmp_path):
    manifest = _manifest(tmp_path, [_publish(server, "wan.safetensors", 30_000, sha256="1" * 64)])

    result = _run_script("download-models", "--manifest", str(manifest), "--models-dir", str(tmp_path / "m"))

    assert result.returncode == 1
    assert "SHA-256" in result.stderr and "wan.safetensors" in result.stderr


def test_without_a_destination_the_script_says_which_settings_to_give(tmp_path):
    manifest = _manifest(tmp_path, [])

    result = _run_script("download-models", "--manifest", str(manifest))

    assert result.returncode == 1
    assert "MODEL_DIR" in result.stderr and "--models-dir" in result.stderr


def test_warm_models_reads_the_files_found_in_any_root(server, tmp_path):
    rows = [_publish(server, "wan.safetensors", 30_000), _publish(server, "vae.safetensors", 20_000, folder="vae")]
    entries = load_manifest(_manifest(tmp_path, rows))
    baked, volume = tmp_path / "baked", tmp_path / "volume"
    download_models(entries[:1], baked, retry_wait_s=0.0)
    download_models(entries[1:], volume, retry_wait_s=0.0)

    assert model_download.warm_models(entries, [baked, volume]) == 50_000
