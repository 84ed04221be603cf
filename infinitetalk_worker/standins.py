"""Stand-in model files: the real key layout and dtypes with random values, so the production graphs run on CPU.

``python -m infinitetalk_worker standins --models-dir DIR`` writes one file for every entry of
``workflows/models.json`` under its exact name, laid out as the pinned loaders read it (see
``../shared/docs/rehearsal-facts.md`` for which loader reads what). Where a loader takes its sizes from
the file (the Wan transformer, InfiniteTalk, the LoRA) the stand-in is shrunk; where the architecture is
fixed (VAE, umt5-xxl, wav2vec2, MelBandRoFormer, CLIP vision ViT-H) it is full size, and umt5-xxl is
all zeros written as a sparse file. Every file carries the safetensors metadata ``STANDIN_KEY: "true"``,
which the start-up checks read (through ComfyUI) to refuse stand-ins unless ``ALLOW_STANDIN_MODELS``.

The layouts are written here from the node sources because CI has neither ComfyUI nor the nodes. The
writer streams tensor by tensor (random values are cut from a seeded pool), so memory stays small and
zero tensors become holes. The format is the safetensors one: 8 bytes of header length, a JSON header,
then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import os
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from .model_download import WORKER_FOLDERS
from .node_lock import DEFAULT_MANIFEST_PATH, LockError, load_graph, load_model_index

log = logging.getLogger(__name__)

STANDIN_KEY = "infinitetalk_worker_standin"
FORMAT_VERSION = "1"  # bump when a layout or the value recipe changes, so old stand-ins are rewritten
DEFAULT_SEED = 20261202
WRAPPER_DIR = Path("custom_nodes") / "ComfyUI-WanVideoWrapper"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # what ComfyUI's own header reader accepts at most

# Sizes of the shrunk Wan transformer: dim 192 gives 12 heads of 16 and 30 layers
# (nodes_model_loading.py:1215-1226); 36 input channels and k_img make it an I2V model (1198-1209).
WAN_DIM, WAN_FFN, WAN_IN_CHANNELS, WAN_LAYERS = 192, 768, 36, 30
LORA_RANK = 64

DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a stand-in: safetensors dtype name, shape, and how it is filled."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    fill: str = "random"  # "random", "ones" (norm scales), "zeros" (written as a hole) or "const"
    value: float = 0.0  # for "const"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


Layout = list[TensorSpec]


def _t(name: str, dtype: str, *shape: int) -> TensorSpec:
    """A parameter: norm scales are ones (as the modules initialise them), everything else random."""
    leaf = name.rsplit(".", 1)[-1]
    is_scale = leaf == "gamma" or (leaf == "weight" and len(shape) == 1 and "norm" in name)
    return TensorSpec(name, dtype, tuple(shape), "ones" if is_scale else "random")


# ---------------------------------------------------------------- layouts (from the node sources)


def _fp8_linear(prefix: str, out_features: int, in_features: int, bias: bool = True) -> Layout:
    """A Linear of a KJ "fp8_e4m3fn_scaled" file: F8 weight, F32 [1] scale_weight, BF16 bias."""
    specs = [TensorSpec(f"{prefix}.weight", "F8_E4M3", (out_features, in_features)),
             TensorSpec(f"{prefix}.scale_weight", "F32", (1,), "const", 0.8 / math.sqrt(in_features))]
    return specs + ([_t(f"{prefix}.bias", "BF16", out_features)] if bias else [])


def _linear(prefix: str, dtype: str, out_features: int, in_features: int, bias: bool = True) -> Layout:
    return [_t(f"{prefix}.weight", dtype, out_features, in_features)] + (
        [_t(f"{prefix}.bias", dtype, out_features)] if bias else [])


def wan_block_linears(dim: int = WAN_DIM, ffn: int = WAN_FFN) -> list[tuple[str, int, int]]:
    """(name, out, in) of the 12 Linear layers of an I2V block (wanvideo/modules/model.py:436-443, 743-744, 936-938)."""
    attn = [(f"self_attn.{p}", dim, dim) for p in "qkvo"]
    cross = [(f"cross_attn.{p}", dim, dim) for p in ("q", "k", "v", "o", "k_img", "v_img")]
    return attn + cross + [("ffn.0", ffn, dim), ("ffn.2", dim, ffn)]


def wan_i2v_layout(dim: int = WAN_DIM, ffn: int = WAN_FFN, layers: int = WAN_LAYERS,
                   in_channels: int = WAN_IN_CHANNELS) -> Layout:
    """Wan 2.1 I2V transformer, fp8 scaled (WanModel, wanvideo/modules/model.py:1744-1828)."""
    specs = [_t("patch_embedding.weight", "F32", dim, in_channels, 1, 2, 2), _t("patch_embedding.bias", "F32", dim)]
    specs += _linear("text_embedding.0", "BF16", dim, 4096) + _linear("text_embedding.2", "BF16", dim, dim)
    specs += _linear("time_embedding.0", "BF16", dim, 256) + _linear("time_embedding.2", "BF16", dim, dim)
    specs += _linear("time_projection.1", "BF16", dim * 6, dim)
    for n in range(layers):
        b = f"blocks.{n}"
        specs.append(_t(f"{b}.modulation", "F32", 1, 6, dim))
        for name, out_f, in_f in wan_block_linears(dim, ffn):
            specs += _fp8_linear(f"{b}.{name}", out_f, in_f)
        specs += [_t(f"{b}.{norm}.weight", "BF16", dim) for norm in
                  ("self_attn.norm_q", "self_attn.norm_k", "cross_attn.norm_q", "cross_attn.norm_k",
                   "cross_attn.norm_k_img")]
        specs += [_t(f"{b}.norm3.weight", "BF16", dim), _t(f"{b}.norm3.bias", "BF16", dim)]
    specs += [_t("head.modulation", "F32", 1, 2, dim)] + _linear("head.head", "BF16", 16 * 4, dim)
    specs += [_t("img_emb.proj.0.weight", "BF16", 1280), _t("img_emb.proj.0.bias", "BF16", 1280)]
    specs += _linear("img_emb.proj.1", "BF16", 1280, 1280) + _linear("img_emb.proj.3", "BF16", dim, 1280)
    specs += [_t("img_emb.proj.4.weight", "BF16", dim), _t("img_emb.proj.4.bias", "BF16", dim)]
    return specs


def infinitetalk_layout(dim: int = WAN_DIM, layers: int = WAN_LAYERS) -> Layout:
    """InfiniteTalk: AudioProjModel of fixed size (multitalk/nodes.py:100-116) and per-block audio attention
    following the transformer (nodes_model_loading.py:1418-1428, SingleStreamMultiAttention(dim, 768, ...))."""
    window, window_vf, blocks, channels, inner, out_dim, tokens = 5, 8, 12, 768, 512, 768, 32
    specs = _linear("audio_proj.proj1", "BF16", inner, window * blocks * channels)
    specs += _linear("audio_proj.proj1_vf", "BF16", inner, window_vf * blocks * channels)
    specs += _linear("audio_proj.proj2", "BF16", inner, inner)
    specs += _linear("audio_proj.proj3", "BF16", tokens * out_dim, inner)
    specs += [_t("audio_proj.norm.weight", "BF16", out_dim), _t("audio_proj.norm.bias", "BF16", out_dim)]
    for n in range(layers):
        b = f"blocks.{n}"
        specs += [_t(f"{b}.norm_x.weight", "BF16", dim), _t(f"{b}.norm_x.bias", "BF16", dim)]
        specs += _fp8_linear(f"{b}.audio_cross_attn.q_linear", dim, dim)
        specs += _fp8_linear(f"{b}.audio_cross_attn.kv_linear", dim * 2, 768)
        specs += _fp8_linear(f"{b}.audio_cross_attn.proj", dim, dim)
    return specs


def lora_layout(dim: int = WAN_DIM, ffn: int = WAN_FFN, layers: int = WAN_LAYERS, rank: int = LORA_RANK) -> Layout:
    """A rank-64 LoRA on every block Linear, in ComfyUI's generic key map (comfy/lora.py:175-186)."""
    specs = []
    for n in range(layers):
        for name, out_f, in_f in wan_block_linears(dim, ffn):
            key = f"diffusion_model.blocks.{n}.{name}"
            specs += [TensorSpec(f"{key}.lora_down.weight", "BF16", (rank, in_f)),
                      TensorSpec(f"{key}.lora_up.weight", "BF16", (out_f, rank))]
    return specs


def _vae_residual(prefix: str, in_dim: int, out_dim: int) -> Layout:
    """ResidualBlock: RMS_norm, CausalConv3d 3x3x3, RMS_norm, CausalConv3d, 1x1x1 shortcut when dims differ."""
    specs = [_t(f"{prefix}.residual.0.gamma", "BF16", in_dim, 1, 1, 1)]
    specs += _conv(f"{prefix}.residual.2", out_dim, in_dim, 3, 3, 3)
    specs += [_t(f"{prefix}.residual.3.gamma", "BF16", out_dim, 1, 1, 1)]
    specs += _conv(f"{prefix}.residual.6", out_dim, out_dim, 3, 3, 3)
    return specs + (_conv(f"{prefix}.shortcut", out_dim, in_dim, 1, 1, 1) if in_dim != out_dim else [])


def _vae_middle(prefix: str, dim: int) -> Layout:
    attention = [_t(f"{prefix}.1.norm.gamma", "BF16", dim, 1, 1)]
    attention += _conv(f"{prefix}.1.to_qkv", dim * 3, dim, 1, 1) + _conv(f"{prefix}.1.proj", dim, dim, 1, 1)
    return _vae_residual(f"{prefix}.0", dim, dim) + attention + _vae_residual(f"{prefix}.2", dim, dim)


def _conv(prefix: str, out_dim: int, *kernel_in: int) -> Layout:
    return [_t(f"{prefix}.weight", "BF16", out_dim, *kernel_in), _t(f"{prefix}.bias", "BF16", out_dim)]


def wan_vae_layout(dim: int = 96, z_dim: int = 16, mult: tuple[int, ...] = (1, 2, 4, 4), res_blocks: int = 2) -> Layout:
    """Wan 2.1 VAE (wanvideo/wan_video_vae.py, Encoder3d/Decoder3d; conv2 out 16 selects it, loaded strictly)."""
    temporal_down = (False, True, True)
    dims = [dim * u for u in (1, *mult)]
    specs = _conv("encoder.conv1", dims[0], 3, 3, 3, 3)
    index = 0
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        for _ in range(res_blocks):
            specs += _vae_residual(f"encoder.downsamples.{index}", in_dim, out_dim)
            in_dim, index = out_dim, index + 1
        if i != len(mult) - 1:
            specs += _conv(f"encoder.downsamples.{index}.resample.1", out_dim, out_dim, 3, 3)
            if temporal_down[i]:
                specs += _conv(f"encoder.downsamples.{index}.time_conv", out_dim, out_dim, 3, 1, 1)
            index += 1
    specs += _vae_middle("encoder.middle", dims[-1])
    specs += [_t("encoder.head.0.gamma", "BF16", dims[-1], 1, 1, 1)]
    specs += _conv("encoder.head.2", z_dim * 2, dims[-1], 3, 3, 3)
    specs += _conv("conv1", z_dim * 2, z_dim * 2, 1, 1, 1) + _conv("conv2", z_dim, z_dim, 1, 1, 1)
    dims = [dim * u for u in (mult[-1], *mult[::-1])]
    temporal_up = temporal_down[::-1]
    specs += _conv("decoder.conv1", dims[0], z_dim, 3, 3, 3) + _vae_middle("decoder.middle", dims[0])
    index = 0
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
        in_dim = in_dim // 2 if i in (1, 2, 3) else in_dim
        for _ in range(res_blocks + 1):
            specs += _vae_residual(f"decoder.upsamples.{index}", in_dim, out_dim)
            in_dim, index = out_dim, index + 1
        if i != len(mult) - 1:
            specs += _conv(f"decoder.upsamples.{index}.resample.1", out_dim // 2, out_dim, 3, 3)
            if temporal_up[i]:
                specs += _conv(f"decoder.upsamples.{index}.time_conv", out_dim * 2, out_dim, 3, 1, 1)
            index += 1
    specs += [_t("decoder.head.0.gamma", "BF16", dims[-1], 1, 1, 1)]
    return specs + _conv("decoder.head.2", 3, dims[-1], 3, 3, 3)


def umt5_xxl_layout() -> Layout:
    """umt5-xxl encoder in the Wan key format (wanvideo/modules/t5.py:461-474), all zeros: a sparse file."""
    dim, ffn, heads, layers, vocab, buckets = 4096, 10240, 64, 24, 256384, 32
    specs = [TensorSpec("token_embedding.weight", "BF16", (vocab, dim), "zeros")]
    for n in range(layers):
        b = f"blocks.{n}"
        specs.append(TensorSpec(f"{b}.norm1.weight", "BF16", (dim,), "zeros"))
        specs += [TensorSpec(f"{b}.attn.{p}.weight", "BF16", (dim, dim), "zeros") for p in "qkvo"]
        specs.append(TensorSpec(f"{b}.norm2.weight", "BF16", (dim,), "zeros"))
        specs += [TensorSpec(f"{b}.ffn.gate.0.weight", "BF16", (ffn, dim), "zeros"),
                  TensorSpec(f"{b}.ffn.fc1.weight", "BF16", (ffn, dim), "zeros"),
                  TensorSpec(f"{b}.ffn.fc2.weight", "BF16", (dim, ffn), "zeros"),
                  TensorSpec(f"{b}.pos_embedding.embedding.weight", "BF16", (buckets, heads), "zeros")]
    return specs + [TensorSpec("norm.weight", "BF16", (dim,), "zeros")]


def wav2vec2_layout() -> Layout:
    """chinese-wav2vec2-base as Wav2VecModelLoader reads it: "wav2vec2." + parameter name, the positional
    conv as weight_g/weight_v (multitalk/nodes.py:63-70); config from multitalk/wav2vec2_config.json."""
    hidden, inner, conv_dim, layers = 768, 3072, 512, 12
    kernels = (10, 3, 3, 3, 3, 2, 2)
    p = "wav2vec2."
    specs = [_t(p + "masked_spec_embed", "F16", hidden)]
    for i, kernel in enumerate(kernels):
        in_channels = 1 if i == 0 else conv_dim
        specs.append(_t(f"{p}feature_extractor.conv_layers.{i}.conv.weight", "F16", conv_dim, in_channels, kernel))
    specs += [_t(f"{p}feature_extractor.conv_layers.0.layer_norm.weight", "F16", conv_dim),
              _t(f"{p}feature_extractor.conv_layers.0.layer_norm.bias", "F16", conv_dim),
              _t(f"{p}feature_projection.layer_norm.weight", "F16", conv_dim),
              _t(f"{p}feature_projection.layer_norm.bias", "F16", conv_dim)]
    specs += _linear(f"{p}feature_projection.projection", "F16", hidden, conv_dim)
    specs += [_t(f"{p}encoder.pos_conv_embed.conv.bias", "F16", hidden),
              _t(f"{p}encoder.pos_conv_embed.conv.weight_g", "F16", 1, 1, 128),
              _t(f"{p}encoder.pos_conv_embed.conv.weight_v", "F16", hidden, hidden // 16, 128),
              _t(f"{p}encoder.layer_norm.weight", "F16", hidden), _t(f"{p}encoder.layer_norm.bias", "F16", hidden)]
    for n in range(layers):
        b = f"{p}encoder.layers.{n}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            specs += _linear(f"{b}.attention.{proj}", "F16", hidden, hidden)
        specs += [_t(f"{b}.layer_norm.weight", "F16", hidden), _t(f"{b}.layer_norm.bias", "F16", hidden)]
        specs += _linear(f"{b}.feed_forward.intermediate_dense", "F16", inner, hidden)
        specs += _linear(f"{b}.feed_forward.output_dense", "F16", hidden, inner)
        specs += [_t(f"{b}.final_layer_norm.weight", "F16", hidden), _t(f"{b}.final_layer_norm.bias", "F16", hidden)]
    return specs


# Frequency bins per mel band of MelBandRoformer (60 bands of librosa.filters.mel(sr=44100, n_fft=2048), as the
# model derives them: ComfyUI-MelBandRoFormer model/mel_band_roformer.py:322-359); each band's input is 2 x 2 x bins.
MEL_BAND_BINS = (7, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 9, 9, 9, 10, 10, 11, 13, 13, 13, 15, 16, 17,
                 19, 20, 20, 22, 24, 26, 28, 29, 31, 33, 36, 39, 41, 44, 47, 50, 54, 57, 61, 66, 71, 76, 80, 86,
                 93, 99, 105, 113, 122, 130)


def melband_roformer_layout() -> Layout:
    """MelBandRoformer with the config hard-coded in ComfyUI-MelBandRoFormer nodes.py:41-65 (strict load)."""
    dim, depth, heads, dim_head = 384, 6, 8, 64
    specs = []
    for n in range(depth):
        for axis in (0, 1):  # time transformer, frequency transformer
            b = f"layers.{n}.{axis}"
            specs += [_t(f"{b}.layers.0.0.rotary_embed.freqs", "F16", dim_head // 2),
                      _t(f"{b}.layers.0.0.norm.gamma", "F16", dim),
                      _t(f"{b}.layers.0.0.to_qkv.weight", "F16", heads * dim_head * 3, dim)]
            specs += _linear(f"{b}.layers.0.0.to_gates", "F16", heads, dim)
            specs += [_t(f"{b}.layers.0.0.to_out.0.weight", "F16", dim, heads * dim_head),
                      _t(f"{b}.layers.0.1.net.0.gamma", "F16", dim)]
            specs += _linear(f"{b}.layers.0.1.net.1", "F16", dim * 4, dim)
            specs += _linear(f"{b}.layers.0.1.net.4", "F16", dim, dim * 4)
            specs.append(_t(f"{b}.norm.gamma", "F16", dim))
    for i, bins in enumerate(MEL_BAND_BINS):
        specs += [_t(f"band_split.to_features.{i}.0.gamma", "F16", 4 * bins)]
        specs += _linear(f"band_split.to_features.{i}.1", "F16", dim, 4 * bins)
    for i, bins in enumerate(MEL_BAND_BINS):
        b = f"mask_estimators.0.to_freqs.{i}.0"
        specs += _linear(f"{b}.0", "F16", dim * 4, dim) + _linear(f"{b}.2", "F16", dim * 4, dim * 4)
        specs += _linear(f"{b}.4", "F16", 8 * bins, dim * 4)
    return specs


def clip_vision_h_layout() -> Layout:
    """CLIP ViT-H/14 vision tower in transformers keys; "layers.30" makes ComfyUI pick the H config
    (comfy/clip_vision.py:121-124, comfy/clip_vision_config_h.json)."""
    hidden, inner, layers, patch, positions, projection = 1280, 5120, 32, 14, 257, 1024
    v = "vision_model."
    specs = [_t(v + "embeddings.class_embedding", "F16", hidden),
             _t(v + "embeddings.patch_embedding.weight", "F16", hidden, 3, patch, patch),
             _t(v + "embeddings.position_embedding.weight", "F16", positions, hidden),
             _t(v + "pre_layrnorm.weight", "F16", hidden), _t(v + "pre_layrnorm.bias", "F16", hidden)]
    for n in range(layers):
        b = f"{v}encoder.layers.{n}"
        specs += [_t(f"{b}.layer_norm1.weight", "F16", hidden), _t(f"{b}.layer_norm1.bias", "F16", hidden)]
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            specs += _linear(f"{b}.self_attn.{proj}", "F16", hidden, hidden)
        specs += [_t(f"{b}.layer_norm2.weight", "F16", hidden), _t(f"{b}.layer_norm2.bias", "F16", hidden)]
        specs += _linear(f"{b}.mlp.fc1", "F16", inner, hidden) + _linear(f"{b}.mlp.fc2", "F16", hidden, inner)
    specs += [_t(v + "post_layernorm.weight", "F16", hidden), _t(v + "post_layernorm.bias", "F16", hidden)]
    return specs + [_t("visual_projection.weight", "F16", projection, hidden)]


# Manifest file -> (layout name, builder). A manifest file without a layout here is an error, not a skip.
LAYOUTS: dict[str, tuple[str, Callable[[], Layout]]] = {
    "Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors": ("wan21_i2v_fp8_scaled", wan_i2v_layout),
    "Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors": ("infinitetalk_fp8_scaled", infinitetalk_layout),
    "Wan2_1-InfiniteTalk-Multi_fp8_e4m3fn_scaled_KJ.safetensors": ("infinitetalk_fp8_scaled", infinitetalk_layout),
    "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors": ("wan21_lora_rank64", lora_layout),
    "Wan2_1_VAE_bf16.safetensors": ("wan21_vae", wan_vae_layout),
    "umt5-xxl-enc-bf16.safetensors": ("umt5_xxl_encoder", umt5_xxl_layout),
    "clip_vision_h.safetensors": ("clip_vision_h", clip_vision_h_layout),
    "wav2vec2-chinese-base_fp16.safetensors": ("wav2vec2_chinese_base", wav2vec2_layout),
    "MelBandRoformer_fp16.safetensors": ("melband_roformer", melband_roformer_layout),
}


class StandinError(RuntimeError):
    """A stand-in cannot be written (unknown manifest file, or a real model file is in the way)."""


# ---------------------------------------------------------------- safetensors header (no package needed)


def read_safetensors_header(path: Path) -> dict | None:
    """The JSON header of a safetensors file, or None when the file is not one."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) != 8:
                return None
            length = struct.unpack("<Q", head)[0]
            if length > MAX_HEADER_BYTES:
                return None
            header = json.loads(f.read(length))
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def is_standin_metadata(metadata: object) -> bool:
    """True when safetensors ``__metadata__`` marks a file as a stand-in."""
    return isinstance(metadata, dict) and metadata.get(STANDIN_KEY) == "true"


def is_standin(path: Path) -> bool:
    """True when the file at ``path`` is a stand-in written by this module (reads only the header)."""
    header = read_safetensors_header(path)
    return header is not None and is_standin_metadata(header.get("__metadata__"))


def standin_files(comfyui_url: str, files: Iterable[tuple[str, str]], timeout_s: float = 30.0) -> list[str]:
    """The (folder, file) pairs that ComfyUI resolves to a stand-in, as "folder/file", sorted.

    Asks ComfyUI's ``GET /view_metadata/<folder>?filename=<file>``, which reads the header of exactly the
    file ComfyUI would load; a 404 means no metadata (or no such file): not a stand-in.
    Raises ``StandinError`` when ComfyUI cannot be asked.
    """
    found = []
    for folder, file in sorted(set(files)):
        url = f"{comfyui_url.rstrip('/')}/view_metadata/{folder}"
        failed = f"Could not read the metadata of {folder}/{file} from ComfyUI"
        try:
            response = requests.get(url, params={"filename": file}, timeout=timeout_s)
        except requests.RequestException as exc:
            raise StandinError(f"{failed}: {type(exc).__name__}") from None
        if response.status_code == 404:
            continue
        if response.status_code != 200:
            raise StandinError(f"{failed}: HTTP {response.status_code}")
        try:
            metadata = response.json()
        except ValueError:
            raise StandinError(f"{failed}: the answer is not JSON") from None
        if is_standin_metadata(metadata):
            found.append(f"{folder}/{file}")
    return found


def standin_problem(found: list[str], allowed: bool) -> str | None:
    """The start-up problem sentence for stand-ins in use, or None when there are none or they are allowed."""
    if not found:
        return None
    if allowed:
        log.warning("ALLOW_STANDIN_MODELS=true: the workflows use stand-in model files (random weights): %s. "
                    "Every video will be noise.", ", ".join(found))
        return None
    return (f"Model file(s) {', '.join(found)} are stand-ins with random weights (written by python -m "
            "infinitetalk_worker standins), not real models; install the real files (python -m infinitetalk_worker "
            "download-models) or set ALLOW_STANDIN_MODELS=true to rehearse with them.")


# ---------------------------------------------------------------- writing


def _header_bytes(layout: Layout, metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for spec in layout:
        header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape),
                             "data_offsets": [offset, offset + spec.nbytes]}
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    return struct.pack("<Q", len(raw)) + raw


def _metadata(file: str, layout_name: str, seed: int) -> dict[str, str]:
    return {STANDIN_KEY: "true", "standin_layout": layout_name, "standin_format": FORMAT_VERSION,
            "standin_seed": str(seed),
            "description": f"Stand-in for {file}: real key layout, random values. Not a model; "
                           "written by python -m infinitetalk_worker standins for rehearsals."}


class _Pool:
    """Seeded random values that tensors are cut from, so writing costs memory bandwidth, not RNG time."""

    SIZE = (1 << 20) + 7  # odd length: rows of a matrix never line up with the pool

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        unit = rng.uniform(-math.sqrt(3), math.sqrt(3), self.SIZE).astype(np.float32)  # variance 1
        self.unit = np.concatenate([unit, unit])
        # e4m3fn bytes of magnitude 0.125..1.875 with random sign (exponent field 4..7; never NaN)
        sign, exponent, mantissa = (rng.integers(0, 2, self.SIZE), rng.integers(4, 8, self.SIZE),
                                    rng.integers(0, 8, self.SIZE))
        fp8 = (sign << 7) | (exponent << 3) | mantissa
        self.fp8 = np.concatenate([fp8, fp8]).astype(np.uint8)

    def chunks(self, spec: TensorSpec, key: str, chunk: int = 1 << 20) -> Iterable[bytes]:
        """The tensor's bytes, chunk by chunk; the start in the pool depends on the file and tensor name."""
        count = math.prod(spec.shape)
        start = zlib.crc32(key.encode()) % self.SIZE
        std = 1.0 / math.sqrt(math.prod(spec.shape[1:])) if len(spec.shape) > 1 else 0.02
        for done in range(0, count, chunk):
            n = min(chunk, count - done)
            s = (start + done) % self.SIZE
            if spec.dtype == "F8_E4M3":
                yield self.fp8[s:s + n].tobytes()
                continue
            if spec.fill == "ones":
                values = 1.0 + 0.02 * self.unit[s:s + n]
            elif spec.fill == "const":
                values = np.full(n, spec.value, np.float32)
            else:
                values = std * self.unit[s:s + n]
            yield _encode(values, spec.dtype)


def _encode(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "F32":
        return values.astype("<f4").tobytes()
    if dtype == "F16":
        return values.astype("<f2").tobytes()
    if dtype == "BF16":  # the upper half of float32 (rounded to nearest even)
        bits = values.astype("<f4").view("<u4")
        return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()
    raise ValueError(f"no encoder for {dtype}")


@dataclass(frozen=True)
class Written:
    """What happened to one stand-in file."""

    path: Path
    wrote: bool  # False: it was already a correct stand-in
    apparent_bytes: int
    disk_bytes: int


def write_standin(path: Path, layout: Layout, metadata: dict[str, str], seed: int) -> Written:
    """Write one stand-in; keep an existing file whose header and size are already exactly this one's."""
    header = _header_bytes(layout, metadata)
    size = len(header) + sum(spec.nbytes for spec in layout)
    if path.exists():
        if not is_standin(path):
            raise StandinError(f"{path} exists and is not a stand-in (a real model file?); not overwriting it.")
        if _same_start(path, header) and path.stat().st_size == size:
            return Written(path, False, size, path.stat().st_blocks * 512)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    pool = _Pool(seed)
    with partial.open("wb") as f:
        f.write(header)
        for spec in layout:
            if spec.fill == "zeros":
                f.seek(spec.nbytes, os.SEEK_CUR)  # a hole: reads back as zeros, takes no disk
                continue
            for chunk in pool.chunks(spec, f"{path.name}:{spec.name}"):
                f.write(chunk)
        f.truncate(size)
    partial.replace(path)
    return Written(path, True, size, path.stat().st_blocks * 512)


def _same_start(path: Path, header: bytes) -> bool:
    with path.open("rb") as f:
        return f.read(len(header)) == header


def manifest_files(manifest: Path = DEFAULT_MANIFEST_PATH) -> list[tuple[str, str]]:
    """(folder, file) of every manifest entry ComfyUI loads, in a stable order.

    The worker's own text-to-speech files (``WORKER_FOLDERS``) get no stand-in: no graph loads them, a
    rehearsal sends recorded audio, and the real Kokoro-82M is small enough to run on the CPU.
    """
    try:
        return sorted(entry for entry in load_model_index(manifest) if entry[0] not in WORKER_FOLDERS)
    except LockError as exc:
        raise StandinError(str(exc)) from None


def write_standins(models_dir: Path, only: Iterable[str] = (), seed: int = DEFAULT_SEED,
                   manifest: Path = DEFAULT_MANIFEST_PATH) -> list[Written]:
    """Write (or keep) the stand-in of every manifest file, or of the ones named in ``only``, under models_dir."""
    entries = manifest_files(manifest)
    wanted = set(only)
    unknown = wanted - {file for _, file in entries}
    if unknown:
        raise StandinError(f"Not in the manifest {manifest}: {', '.join(sorted(unknown))}.")
    results = []
    for folder, file in entries:
        if wanted and file not in wanted:
            continue
        if file not in LAYOUTS:
            raise StandinError(f"No stand-in layout for manifest file {file}; add one to LAYOUTS in "
                               "infinitetalk_worker/standins.py.")
        layout_name, build = LAYOUTS[file]
        results.append(write_standin(models_dir / folder / file, build(), _metadata(file, layout_name, seed), seed))
    return results


# ---------------------------------------------------------------- what a rehearsal needs besides weights


def write_t5_tokenizer(comfyui_dir: Path) -> Written:
    """A Unigram tokenizer.json with umt5's 256,000 pieces (ids 0-3: <pad>, </s>, <s>, <unk>) and its 300
    extra ids, where WanVideoWrapper loads it (configs/T5_tokenizer, t5.py:504-505); the stored node
    snapshot lacks it. Real tokenisation is not reproduced: the pieces are the letters and short letter runs."""
    folder = comfyui_dir / WRAPPER_DIR / "configs" / "T5_tokenizer"
    if not folder.is_dir():
        raise StandinError(f"{folder} does not exist: is {comfyui_dir} a ComfyUI with ComfyUI-WanVideoWrapper?")
    path = folder / "tokenizer.json"
    body = json.dumps(_tokenizer_document(), ensure_ascii=False, separators=(",", ":")).encode()
    if path.exists() and path.read_bytes() == body:
        return Written(path, False, len(body), path.stat().st_blocks * 512)
    if path.exists() and _STANDIN_PIECE not in path.read_text(encoding="utf-8", errors="replace"):
        raise StandinError(f"{path} exists and is not a stand-in tokenizer; not overwriting it.")
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(body)
    partial.replace(path)
    return Written(path, True, len(body), path.stat().st_blocks * 512)


_STANDIN_PIECE = "<infinitetalk_worker_standin>"


def _tokenizer_document(pieces: int = 256_000, extra_ids: int = 300) -> dict:
    specials = ["<pad>", "</s>", "<s>", "<unk>"]
    letters = [chr(c) for c in range(33, 127)] + ["\u2581"]
    vocab = [[p, 0.0] for p in specials] + [[_STANDIN_PIECE, -100.0]] + [[c, -10.0] for c in letters]
    lower = "abcdefghijklmnopqrstuvwxyz"
    runs = [a + b for a in lower for b in lower] + [a + b + c for a in lower for b in lower for c in lower]
    vocab += [["\u2581" + r, -11.0] for r in runs] + [[r, -12.0] for r in runs]
    vocab += [[f"<standin_{i}>", -100.0] for i in range(pieces - len(vocab))]
    added = [{"id": i, "content": p, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, p in enumerate(specials)]
    added += [{"id": pieces + i, "content": f"<extra_id_{extra_ids - 1 - i}>", "single_word": False, "lstrip": False,
               "rstrip": False, "normalized": False, "special": True} for i in range(extra_ids)]
    metaspace = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True}
    eos = {"SpecialToken": {"id": "</s>", "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        "pre_tokenizer": metaspace,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"Sequence": {"id": "A", "type_id": 0}}, eos],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, eos,
                                    {"Sequence": {"id": "B", "type_id": 0}}, eos],
                           "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": False},
    }


def text_embed_cache_path(comfyui_dir: Path, prompt: str) -> Path:
    """Where WanVideoTextEncodeCached looks for a prompt's embeddings: sha256 of the stripped prompt
    (nodes.py get_cache_path, inside the custom node's folder)."""
    digest = hashlib.sha256(prompt.strip().encode("utf-8")).hexdigest()
    return comfyui_dir / WRAPPER_DIR / "text_embed_cache" / f"{digest}.pt"


def _prompt_parts(prompt: str) -> list[str]:
    """The prompts the encoder would run for one text: '|' separates prompts, '[n]' marks EchoShot shots."""
    import re

    if "|" in prompt:
        return [p.strip() for p in prompt.split("|")]
    if "[1]" in prompt:
        return [p.strip() for p in re.split(r"\[\d+\]", prompt) if p.strip()]
    return [prompt.strip()]


def write_text_embed_cache(comfyui_dir: Path, prompt: str, negative_prompt: str,
                           seed: int = DEFAULT_SEED) -> list[Path]:
    """Cache entries for both prompts as the node would have saved them, so WanVideoTextEncodeCached with
    use_disk_cache finds them and never runs umt5-xxl: a torch.save file holding a list of one BF16
    [tokens, 4096] tensor per prompt part (encoder output trimmed to its tokens, t5.py T5EncoderModel.__call__).
    Token counts are one per word plus </s> (at most 512); the values are random from ``seed``.
    A real (non-stand-in) entry already there is kept: the node would use it."""
    return [w.path for w in _write_text_embeds(comfyui_dir, prompt, negative_prompt, seed)]


def _write_text_embeds(comfyui_dir: Path, prompt: str, negative_prompt: str, seed: int) -> list[Written]:
    results = []
    for text, parts in ((prompt, _prompt_parts(prompt)), (negative_prompt, [negative_prompt])):
        path = text_embed_cache_path(comfyui_dir, text)
        body = _torch_save_bytes([min(512, len(part.split()) + 1) for part in parts], 4096, seed, text)
        unchanged = path.exists() and (not is_standin_embed(path) or path.read_bytes() == body)
        if not unchanged:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(body)
            partial.replace(path)
        results.append(Written(path, not unchanged, path.stat().st_size, path.stat().st_blocks * 512))
    return results


def is_standin_embed(path: Path) -> bool:
    """True when a text-embedding cache file was written by write_text_embed_cache."""
    try:
        with zipfile.ZipFile(path) as archive:
            return f"archive/{STANDIN_KEY}" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _torch_save_bytes(rows: list[int], width: int, seed: int, text: str) -> bytes:
    """torch.save's zip format for a list of BF16 tensors, written without torch (CI has none): data.pkl
    rebuilds each tensor with torch._utils._rebuild_tensor_v2 from storage archive/data/<i>; only globals
    that torch.load(weights_only=True) allows are used. A marker record names it a stand-in."""
    pool = _Pool(seed + zlib.crc32(text.encode("utf-8")))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        def record(name: str, data: bytes | str) -> None:  # a fixed date, so the same input gives the same bytes
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)

        record("archive/data.pkl", _tensor_list_pickle(rows, width))
        record("archive/byteorder", "little")
        for i, n in enumerate(rows):
            spec = TensorSpec(f"context.{i}", "BF16", (n, width))
            record(f"archive/data/{i}", b"".join(pool.chunks(spec, f"{text}:{i}")))
        record("archive/version", "3\n")
        record(f"archive/{STANDIN_KEY}", "true")
    return buffer.getvalue()


def _tensor_list_pickle(rows: list[int], width: int) -> bytes:
    """Pickle protocol 2 opcodes for [tensor, ...] as torch.save writes them."""
    def text(s: str) -> bytes:
        raw = s.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw

    def integer(i: int) -> bytes:
        return b"J" + struct.pack("<i", i)

    out = [b"\x80\x02]("]  # PROTO 2, EMPTY_LIST, MARK
    for i, n in enumerate(rows):
        storage_type = b"ctorch\nBFloat16Storage\n"
        storage = b"(" + text("storage") + storage_type + text(str(i)) + text("cpu") + integer(n * width) + b"tQ"
        size = b"(" + integer(n) + integer(width) + b"t"
        stride = b"(" + integer(width) + integer(1) + b"t"
        hooks = b"ccollections\nOrderedDict\n)R"
        rebuild = b"ctorch._utils\n_rebuild_tensor_v2\n"
        out.append(rebuild + b"(" + storage + integer(0) + size + stride + b"\x89" + hooks + b"tR")
    out.append(b"e.")  # APPENDS, STOP
    return b"".join(out)


def graph_prompts(workflow_dir: Path) -> set[tuple[str, str]]:
    """(positive, negative) prompt pairs of the WanVideoTextEncodeCached nodes of the workflow files."""
    pairs = set()
    for path in sorted(workflow_dir.glob("*.json")):
        try:
            graph = load_graph(path)
        except LockError:  # the lock, the manifest or a broken file: no prompts there
            continue
        for node in graph.values():
            if isinstance(node, dict) and node.get("class_type") == "WanVideoTextEncodeCached":
                inputs = node.get("inputs") or {}
                if isinstance(inputs.get("positive_prompt"), str) and isinstance(inputs.get("negative_prompt"), str):
                    pairs.add((inputs["positive_prompt"], inputs["negative_prompt"]))
    return pairs


# ---------------------------------------------------------------- command


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("standins", help="write stand-in model files (random weights) for rehearsals")
    parser.add_argument("--models-dir", type=Path, required=True, help="models folder to write <folder>/<file> into")
    parser.add_argument("--comfyui-dir", type=Path, default=None,
                        help="ComfyUI folder: also write the T5 tokenizer and the workflows' prompt-embedding cache")
    parser.add_argument("--only", action="append", default=[], metavar="FILE",
                        help="write only this manifest file (repeatable)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"seed of the random values (default {DEFAULT_SEED})")
    parser.set_defaults(func=_standins_command)


def _standins_command(args: argparse.Namespace) -> int:
    from .node_lock import WORKFLOW_ROOT

    try:
        results = write_standins(args.models_dir.resolve(), args.only, args.seed)
        if args.comfyui_dir:
            results.append(write_t5_tokenizer(args.comfyui_dir.resolve()))
            for positive, negative in sorted(graph_prompts(WORKFLOW_ROOT)):
                results += _write_text_embeds(args.comfyui_dir.resolve(), positive, negative, args.seed)
    except (StandinError, OSError) as exc:
        sys.stdout.write(f"{exc}\n")
        return 1
    for r in results:
        verb = "wrote" if r.wrote else "kept (already up to date)"
        sys.stdout.write(f"{verb:34} {r.path}  {_size(r.apparent_bytes)} ({_size(r.disk_bytes)} on disk)\n")
    apparent, disk = sum(r.apparent_bytes for r in results), sum(r.disk_bytes for r in results)
    sys.stdout.write(f"{len(results)} files, {sum(r.wrote for r in results)} written: {_size(apparent)} apparent, "
                     f"{_size(disk)} on disk.\n")
    return 0


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
