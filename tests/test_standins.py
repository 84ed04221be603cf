"""The standins command: every manifest file written in the layout its pinned loader reads, marked, idempotent;
the prompt-embedding cache and the T5 tokenizer a rehearsal needs; start-up refuses stand-ins unless allowed.

Files are read back with the real ``safetensors`` and ``tokenizers`` libraries, not with the writer's code.
Expected layouts are the facts in ../shared/docs/rehearsal-facts.md; the parameter counts of the full-size
files are those of the real architectures (state dicts of the pinned classes, counted on the reference ComfyUI).
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import pickle
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file
from tokenizers import Tokenizer

from infinitetalk_worker.__main__ import main
from infinitetalk_worker.config import REPO_ROOT, load_settings
from infinitetalk_worker.model_download import WORKER_FOLDERS
from infinitetalk_worker.node_lock import DEFAULT_LOCK_PATH, load_lock
from infinitetalk_worker.standins import (
    STANDIN_KEY,
    StandinError,
    is_standin,
    write_standins,
    write_t5_tokenizer,
    write_text_embed_cache,
)
from infinitetalk_worker.startup_checks import StartupCheckError, run_startup_checks
from tests.test_startup_checks import installed_models, object_info_from_lock

# The files ComfyUI loads: the worker's own text-to-speech files (WORKER_FOLDERS) get no stand-in.
MANIFEST = [row for row in json.loads((REPO_ROOT / "workflows" / "models.json").read_text())
            if row["folder"] not in WORKER_FOLDERS]
TRANSFORMER = "Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors"
INFINITETALK = ("Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors",
                "Wan2_1-InfiniteTalk-Multi_fp8_e4m3fn_scaled_KJ.safetensors")
LORA = "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                 "cross_attn.v", "cross_attn.o", "cross_attn.k_img", "cross_attn.v_img", "ffn.0", "ffn.2")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Every stand-in written once (about 2.5 GB on disk, 14 GB apparent with the sparse umt5)."""
    root = tmp_path_factory.mktemp("models")
    write_standins(root)
    return root


def tensors(path: Path) -> dict[str, tuple[str, list[int]]]:
    """name -> (dtype, shape), as the safetensors library reads the file (it checks the offsets on open)."""
    with safe_open(path, framework="numpy") as f:
        return {name: (f.get_slice(name).get_dtype(), f.get_slice(name).get_shape()) for name in f.keys()}


def metadata(path: Path) -> dict[str, str]:
    with safe_open(path, framework="numpy") as f:
        return f.metadata()


def entry_path(root: Path, file: str) -> Path:
    row = next(r for r in MANIFEST if r["file"] == file)
    return root / row["folder"] / row["file"]


def test_every_manifest_file_is_written_under_its_name_loadable_and_marked(models):
    for row in MANIFEST:
        path = models / row["folder"] / row["file"]
        assert path.is_file(), path
        assert metadata(path)[STANDIN_KEY] == "true"
        assert is_standin(path)
        found = tensors(path)
        assert found, path
        data_bytes = sum(math.prod(shape) * {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1}[dtype]
                         for dtype, shape in found.values())
        assert path.stat().st_size > data_bytes  # header + every tensor's bytes are there
    written = {p.relative_to(models).as_posix() for p in models.rglob("*.safetensors")}
    assert written == {f"{r['folder']}/{r['file']}" for r in MANIFEST}


def test_transformer_is_a_small_scaled_fp8_i2v_model(models):
    found = tensors(entry_path(models, TRANSFORMER))
    assert found["patch_embedding.weight"] == ("F32", [192, 36, 1, 2, 2])  # dim 192, in_channels 36 -> i2v
    dim = found["patch_embedding.weight"][1][0]
    assert dim % 12 == 0 and (dim // 12) % 2 == 0  # 12 heads (any dim but 5120/3072), even head dim
    assert "text_embedding.0.weight" in found and "blocks.0.cross_attn.k_img.weight" in found
    assert found["blocks.0.ffn.0.bias"][1] == [768] and found["blocks.0.ffn.2.weight"][1] == [192, 768]
    blocks = {int(name.split(".")[1]) for name in found if name.startswith("blocks.")}
    assert blocks == set(range(30))  # the loader builds 30 layers for this dim
    for n in range(30):
        assert found[f"blocks.{n}.modulation"][0] == "F32"
        for linear in BLOCK_LINEARS:
            assert found[f"blocks.{n}.{linear}.weight"][0] == "F8_E4M3"
            assert found[f"blocks.{n}.{linear}.scale_weight"] == ("F32", [1])
    assert len(found) == 1343


def test_lora_has_360_rank_64_pairs_matching_the_transformers_layers(models):
    transformer = tensors(entry_path(models, TRANSFORMER))
    lora = tensors(entry_path(models, LORA))
    pairs = {name.removesuffix(".lora_down.weight") for name in lora if name.endswith(".lora_down.weight")}
    assert len(pairs) == 360 and len(lora) == 720
    for key in pairs:
        out_features, in_features = transformer[key.removeprefix("diffusion_model.") + ".weight"][1]
        assert lora[f"{key}.lora_down.weight"] == ("BF16", [64, in_features])
        assert lora[f"{key}.lora_up.weight"] == ("BF16", [out_features, 64])


@pytest.mark.parametrize("file", INFINITETALK)
def test_infinitetalk_has_the_fixed_audio_projection_and_per_block_attention_of_the_transformers_size(models, file):
    assert "infinite" in file.lower()  # how MultiTalkModelLoader recognises InfiniteTalk
    found = tensors(entry_path(models, file))
    assert found["audio_proj.proj1.weight"] == ("BF16", [512, 5 * 12 * 768])
    assert found["audio_proj.proj1_vf.weight"] == ("BF16", [512, 8 * 12 * 768])
    assert found["audio_proj.proj2.weight"] == ("BF16", [512, 512])
    assert found["audio_proj.proj3.weight"] == ("BF16", [32 * 768, 512])
    assert found["audio_proj.norm.weight"] == ("BF16", [768])
    audio_proj = sum(math.prod(shape) for name, (_, shape) in found.items() if name.startswith("audio_proj."))
    assert audio_proj == 74_214_400
    for n in range(30):
        b = f"blocks.{n}"
        assert found[f"{b}.norm_x.weight"][1] == [192] and found[f"{b}.norm_x.bias"][1] == [192]
        assert found[f"{b}.audio_cross_attn.q_linear.weight"] == ("F8_E4M3", [192, 192])
        assert found[f"{b}.audio_cross_attn.kv_linear.weight"] == ("F8_E4M3", [384, 768])
        assert found[f"{b}.audio_cross_attn.proj.weight"] == ("F8_E4M3", [192, 192])
        for linear in ("q_linear", "kv_linear", "proj"):
            assert found[f"{b}.audio_cross_attn.{linear}.scale_weight"] == ("F32", [1])
    assert "blocks.30.norm_x.weight" not in found


FULL_SIZE = {  # file: (tensors, parameters, dtype) of the real architecture the loader builds
    "Wan2_1_VAE_bf16.safetensors": (194, 126_892_531, "BF16"),
    "umt5-xxl-enc-bf16.safetensors": (242, 5_680_910_336, "BF16"),
    "wav2vec2-chinese-base_fp16.safetensors": (211, 94_371_712, "F16"),
    "MelBandRoformer_fp16.safetensors": (684, 228_203_172, "F16"),
    "clip_vision_h.safetensors": (520, 632_076_800, "F16"),
}


@pytest.mark.parametrize("file", sorted(FULL_SIZE))
def test_fixed_architectures_are_full_size(models, file):
    count, parameters, dtype = FULL_SIZE[file]
    found = tensors(entry_path(models, file))
    assert len(found) == count
    assert sum(math.prod(shape) for _, shape in found.values()) == parameters
    assert {d for d, _ in found.values()} == {dtype}


def test_loader_specific_keys_of_the_fixed_files(models):
    vae = tensors(entry_path(models, "Wan2_1_VAE_bf16.safetensors"))
    assert vae["conv2.weight"][1][0] == 16  # selects WanVideoVAE (not the 48-channel 2.2 VAE)
    clip = tensors(entry_path(models, "clip_vision_h.safetensors"))
    assert "vision_model.encoder.layers.30.layer_norm1.weight" in clip  # ViT-H config
    assert "vision_model.encoder.layers.47.layer_norm1.weight" not in clip  # not ViT-G
    wav2vec = tensors(entry_path(models, "wav2vec2-chinese-base_fp16.safetensors"))
    assert wav2vec["wav2vec2.encoder.pos_conv_embed.conv.weight_g"][1] == [1, 1, 128]
    assert wav2vec["wav2vec2.encoder.pos_conv_embed.conv.weight_v"][1] == [768, 48, 128]
    assert all(name.startswith("wav2vec2.") for name in wav2vec)
    t5 = tensors(entry_path(models, "umt5-xxl-enc-bf16.safetensors"))
    assert t5["token_embedding.weight"][1] == [256384, 4096] and "blocks.23.ffn.fc2.weight" in t5


def test_umt5_is_sparse_and_reads_back_as_zeros(models):
    path = entry_path(models, "umt5-xxl-enc-bf16.safetensors")
    assert path.stat().st_size > 11_361_820_672  # every byte of data is there ...
    assert path.stat().st_blocks * 512 < 10_000_000  # ... as holes
    with path.open("rb") as f:
        f.seek(path.stat().st_size // 2)
        assert not any(f.read(1 << 20))


def test_values_are_random_finite_and_norm_scales_are_near_one(models):
    with safe_open(entry_path(models, "clip_vision_h.safetensors"), framework="numpy") as f:
        weight = f.get_tensor("vision_model.encoder.layers.0.mlp.fc1.weight").astype(np.float32)
        norm = f.get_tensor("vision_model.encoder.layers.0.layer_norm1.weight").astype(np.float32)
    assert np.isfinite(weight).all() and 0 < weight.std() < 0.1 and len(np.unique(weight[:8])) > 1
    assert abs(norm.mean() - 1) < 0.05
    with safe_open(entry_path(models, "wav2vec2-chinese-base_fp16.safetensors"), framework="numpy") as f:
        assert np.isfinite(f.get_tensor("wav2vec2.encoder.layers.3.attention.q_proj.weight")).all()


def test_the_same_seed_writes_the_same_bytes_and_a_second_run_keeps_every_file(models, tmp_path):
    again = write_standins(models)
    assert [r.wrote for r in again] == [False] * len(MANIFEST)
    write_standins(tmp_path, only=[TRANSFORMER])
    assert entry_path(tmp_path, TRANSFORMER).read_bytes() == entry_path(models, TRANSFORMER).read_bytes()


def test_a_changed_stand_in_is_rewritten_and_a_real_file_is_never_overwritten(tmp_path):
    path = entry_path(tmp_path, LORA)
    write_standins(tmp_path, only=[LORA])
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 10)
    assert [r.wrote for r in write_standins(tmp_path, only=[LORA])] == [True]
    assert is_standin(path) and len(tensors(path)) == 720
    real = entry_path(tmp_path, "Wan2_1_VAE_bf16.safetensors")
    real.parent.mkdir(parents=True)
    save_file({"conv2.weight": np.zeros((16, 16, 1, 1, 1), np.float16)}, str(real))
    before = real.read_bytes()
    with pytest.raises(StandinError, match="is not a stand-in"):
        write_standins(tmp_path, only=["Wan2_1_VAE_bf16.safetensors"])
    assert real.read_bytes() == before


def test_the_command_prints_what_it_wrote_and_the_sizes(tmp_path, capsys):
    args = ["standins", "--models-dir", str(tmp_path), "--only", TRANSFORMER, "--only", LORA]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == ["wrote", "wrote", "2"]
    assert "2 files, 2 written: 48.8 MB apparent, 48.8 MB on disk." in out
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("kept (already up to date)") == 2 and "2 files, 0 written" in out
    assert main(["standins", "--models-dir", str(tmp_path), "--only", "nope.safetensors"]) == 1
    assert "Not in the manifest" in capsys.readouterr().out


# ---------------------------------------------------------------- what a rehearsal needs besides weights


def comfyui_tree(tmp_path: Path) -> Path:
    """A ComfyUI folder as the node snapshot has it: T5_tokenizer with its configs but no tokenizer.json."""
    root = tmp_path / "ComfyUI"
    tokenizer_dir = root / "custom_nodes" / "ComfyUI-WanVideoWrapper" / "configs" / "T5_tokenizer"
    tokenizer_dir.mkdir(parents=True)
    return root


class TorchLoadAllowlist(pickle.Unpickler):
    """Unpickles data.pkl with only the globals torch.load(weights_only=True) accepts, into numpy arrays."""

    ALLOWED = {("torch._utils", "_rebuild_tensor_v2"), ("torch", "BFloat16Storage"), ("collections", "OrderedDict")}

    def __init__(self, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(archive.open(f"{prefix}/data.pkl"))
        self.archive, self.prefix, self.globals = archive, prefix, set()

    def find_class(self, module, name):
        assert (module, name) in self.ALLOWED, (module, name)
        self.globals.add((module, name))
        if name == "_rebuild_tensor_v2":
            return self.rebuild
        return collections.OrderedDict if name == "OrderedDict" else "bf16"

    def persistent_load(self, pid):
        kind, dtype, key, location, numel = pid
        assert (kind, dtype, location) == ("storage", "bf16", "cpu")
        bits = np.frombuffer(self.archive.read(f"{self.prefix}/data/{key}"), "<u2")
        assert bits.size == numel
        return (bits.astype("<u4") << 16).view("<f4")

    @staticmethod
    def rebuild(storage, offset, size, stride, requires_grad, hooks):
        assert offset == 0 and stride == (size[1], 1) and requires_grad is False
        return storage[: size[0] * size[1]].reshape(size)


def read_embed_cache(path: Path) -> list[np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        prefix = archive.namelist()[0].split("/")[0]
        assert archive.read(f"{prefix}/version").strip() == b"3"
        assert archive.read(f"{prefix}/byteorder") == b"little"
        return TorchLoadAllowlist(archive, prefix).load()


def test_text_embed_cache_is_where_the_node_looks_in_torch_saves_format(tmp_path, monkeypatch):
    root = comfyui_tree(tmp_path)
    prompt, negative = "  A person talking naturally ", "blurred, static"
    paths = write_text_embed_cache(root, prompt, negative)
    cache = root / "custom_nodes" / "ComfyUI-WanVideoWrapper" / "text_embed_cache"
    assert paths == [cache / (hashlib.sha256(text.strip().encode()).hexdigest() + ".pt") for text in (prompt, negative)]
    positive_embeds, negative_embeds = (read_embed_cache(p) for p in paths)
    assert [e.shape for e in positive_embeds] == [(5, 4096)]  # 4 words + </s>: the encoder output, trimmed
    assert [e.shape for e in negative_embeds] == [(3, 4096)]
    assert all(np.isfinite(e).all() and e.std() > 0 for e in positive_embeds + negative_embeds)
    with zipfile.ZipFile(paths[0]) as archive:
        assert archive.read(f"archive/{STANDIN_KEY}") == b"true"
    assert not np.array_equal(positive_embeds[0][:3], negative_embeds[0][:3])
    before = [p.read_bytes() for p in paths]
    later = zipfile.time.time() + 3600
    monkeypatch.setattr(zipfile.time, "time", lambda: later)  # an hour later, e.g. the next job's call
    assert write_text_embed_cache(root, prompt, negative) == paths
    assert [p.read_bytes() for p in paths] == before  # same seed, same bytes: nothing rewritten


def test_prompt_travel_gives_one_embedding_per_prompt_and_a_real_cache_entry_is_kept(tmp_path):
    root = comfyui_tree(tmp_path)
    positive, negative = write_text_embed_cache(root, "a cat | a dog running", "ugly")
    assert [e.shape for e in read_embed_cache(positive)] == [(3, 4096), (4, 4096)]
    negative.write_bytes(b"the node's own cache entry")
    write_text_embed_cache(root, "a cat | a dog running", "ugly")
    assert negative.read_bytes() == b"the node's own cache entry"


def test_t5_tokenizer_is_written_into_the_wrapper_and_tokenizes_like_umt5(tmp_path):
    root = comfyui_tree(tmp_path)
    written = write_t5_tokenizer(root)
    assert written.path == root / "custom_nodes/ComfyUI-WanVideoWrapper/configs/T5_tokenizer/tokenizer.json"
    tokenizer = Tokenizer.from_file(str(written.path))
    assert tokenizer.get_vocab_size(with_added_tokens=False) == 256_000
    assert [tokenizer.id_to_token(i) for i in range(4)] == ["<pad>", "</s>", "<s>", "<unk>"]
    assert tokenizer.token_to_id("<extra_id_0>") == 256_299 and tokenizer.token_to_id("<extra_id_299>") == 256_000
    ids = tokenizer.encode("A person talking naturally").ids
    assert ids[-1] == 1 and all(0 <= i < 256_300 for i in ids) and 3 not in ids  # ends with </s>, no unknowns
    assert write_t5_tokenizer(root).wrote is False
    with pytest.raises(StandinError, match="does not exist"):
        write_t5_tokenizer(tmp_path / "not-comfyui")


def test_the_command_writes_tokenizer_and_the_workflows_prompt_cache_into_the_given_comfyui(tmp_path, capsys):
    root = comfyui_tree(tmp_path)
    assert main(["standins", "--models-dir", str(tmp_path / "m"), "--only", LORA, "--comfyui-dir", str(root)]) == 0
    graph = json.loads((REPO_ROOT / "workflows" / "i2v_single.json").read_text())
    node = next(n for n in graph.values() if isinstance(n, dict) and n.get("class_type") == "WanVideoTextEncodeCached")
    for text in (node["inputs"]["positive_prompt"], node["inputs"]["negative_prompt"]):
        assert (root / "custom_nodes/ComfyUI-WanVideoWrapper/text_embed_cache"
                / (hashlib.sha256(text.strip().encode()).hexdigest() + ".pt")).is_file()
    assert (root / "custom_nodes/ComfyUI-WanVideoWrapper/configs/T5_tokenizer/tokenizer.json").is_file()
    assert not list(REPO_ROOT.glob("**/text_embed_cache"))  # never into the repository


# ---------------------------------------------------------------- start-up refuses stand-ins


class ComfyWithModels:
    """Answers /object_info (agreeing with the lock) and /view_metadata as ComfyUI does: the
    ``__metadata__`` of <models>/<folder>/<file>, 404 when the file or its metadata is missing."""

    def __init__(self, models_dir: Path) -> None:
        document = json.dumps(object_info_from_lock(load_lock(DEFAULT_LOCK_PATH), installed_models())).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                url = urlsplit(self.path)
                body = document if url.path == "/object_info" else None
                if url.path.startswith("/view_metadata/"):
                    file = parse_qs(url.query).get("filename", [""])[0]
                    path = models_dir / url.path.removeprefix("/view_metadata/") / file
                    if path.is_file():
                        with safe_open(path, framework="numpy") as f:
                            body = json.dumps(f.metadata()).encode() if f.metadata() else None
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def settings_for(url: str, allow: bool):
    return load_settings({"COMFYUI_URL": url, "COMFYUI_HTTP_TIMEOUT_S": "5",
                          "ALLOW_STANDIN_MODELS": "true" if allow else "false"})


@pytest.fixture
def half_real(tmp_path) -> Path:
    """Two stand-ins among files that are real as far as a header tells (no stand-in metadata)."""
    write_standins(tmp_path, only=[TRANSFORMER, LORA])
    for row in MANIFEST:
        path = tmp_path / row["folder"] / row["file"]
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({"w": np.zeros(4, np.float16)}, str(path), metadata={"format": "pt"})
    return tmp_path


def test_start_up_refuses_stand_ins_naming_them_and_the_setting(half_real):
    comfy = ComfyWithModels(half_real)
    try:
        with pytest.raises(StartupCheckError) as caught:
            run_startup_checks(settings_for(comfy.url, allow=False))
    finally:
        comfy.close()
    problems = [line for line in str(caught.value).splitlines() if line.startswith("- ")]
    assert problems == [
        f"- Model file(s) diffusion_models/{TRANSFORMER}, loras/{LORA} are stand-ins with random weights (written "
        "by python -m infinitetalk_worker standins), not real models; install the real files (python -m "
        "infinitetalk_worker download-models) or set ALLOW_STANDIN_MODELS=true to rehearse with them."]


def test_allow_standin_models_starts_and_reports_them_for_the_jobs(half_real):
    comfy = ComfyWithModels(half_real)
    try:
        report = run_startup_checks(settings_for(comfy.url, allow=True))
    finally:
        comfy.close()
    assert report.standin_models == [f"diffusion_models/{TRANSFORMER}", f"loras/{LORA}"]


def test_real_files_pass_and_report_no_stand_ins(tmp_path):
    for row in MANIFEST:
        path = tmp_path / row["folder"] / row["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"w": np.zeros(4, np.float16)}, str(path))
    comfy = ComfyWithModels(tmp_path)
    try:
        assert run_startup_checks(settings_for(comfy.url, allow=False)).standin_models == []
    finally:
        comfy.close()
