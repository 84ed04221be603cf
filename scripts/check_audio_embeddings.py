#!/usr/bin/env python3
"""Fail the image build when WanVideoWrapper's wav2vec2 model gives no hidden states.

MultiTalkWav2VecEmbeds (``multitalk/nodes.py``) stacks ``embeddings.hidden_states[1:]`` of the node
pack's own Wav2Vec2Model subclass (``multitalk/wav2vec2.py``). With transformers 5.x that model returns
``hidden_states=None`` and every InfiniteTalk job fails with "'NoneType' object is not subscriptable";
ComfyUI still imports the node, so only running the model catches it. This runs the node pack's model
the way its loader and embedding node do, on random weights (no model file needed):

- the model built from the node pack's ``multitalk/wav2vec2_config.json`` under accelerate's
  ``init_empty_weights``, its tensors set from a safetensors file with accelerate's
  ``set_module_tensor_to_device`` (as ``Wav2VecModelLoader`` does);
- one second of audio through transformers' ``Wav2Vec2FeatureExtractor`` with the loader's settings,
  then ``model(features, seq_len=25, output_hidden_states=True)`` (as ``MultiTalkWav2VecEmbeds`` does);
- the hidden states must be ``num_hidden_layers + 1`` tensors of ``(1, 25, hidden_size)``, stacked the
  node's way.

It prints the versions of torch, transformers, diffusers, peft and accelerate it ran with.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from importlib import metadata
from pathlib import Path

CHECKED_PACKAGES = ("torch", "transformers", "diffusers", "peft", "accelerate")
FPS = 25
SAMPLE_RATE = 16000
# Wav2VecModelLoader's feature-extractor settings (multitalk/nodes.py).
FEATURE_EXTRACTOR = {"do_normalize": False, "feature_size": 1, "padding_side": "right", "padding_value": 0.0,
                     "return_attention_mask": False, "sampling_rate": SAMPLE_RATE}


class AudioEmbeddingCheckError(RuntimeError):
    """The audio path does not give what MultiTalkWav2VecEmbeds needs; the message says what."""


def versions() -> dict[str, str]:
    found = {}
    for name in CHECKED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def load_node_model_class(wanvideo_dir: Path):
    """WanVideoWrapper's own Wav2Vec2Model subclass, imported from its file (it imports only torch and transformers)."""
    source = wanvideo_dir / "multitalk" / "wav2vec2.py"
    if not source.is_file():
        raise AudioEmbeddingCheckError(f"{source} does not exist: give the ComfyUI-WanVideoWrapper folder.")
    spec = importlib.util.spec_from_file_location("wanvideo_multitalk_wav2vec2", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as for the real import: transformers looks the class's module up there
    spec.loader.exec_module(module)
    return module.Wav2Vec2Model


def build_model(model_class, config, work_dir: Path):
    """Random weights, saved and loaded back the way Wav2VecModelLoader loads the real file."""
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    weights = work_dir / "wav2vec2-random.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in model_class(config).state_dict().items()}, str(weights))
    with init_empty_weights():
        model = model_class(config).eval()
    state = load_file(str(weights))
    for name, _ in model.named_parameters():
        set_module_tensor_to_device(model, name, device="cpu", dtype=torch.float32, value=state[name])
    for name, _ in model.named_buffers():
        if name in state:
            set_module_tensor_to_device(model, name, device="cpu", value=state[name])
    return model


def embed_one_second(model) -> object:
    """MultiTalkWav2VecEmbeds' steps for one speaker; returns the stacked embedding."""
    import numpy as np
    import torch
    from transformers import Wav2Vec2FeatureExtractor

    audio = np.random.default_rng(0).uniform(-0.5, 0.5, SAMPLE_RATE).astype(np.float32)
    features = np.squeeze(Wav2Vec2FeatureExtractor(**FEATURE_EXTRACTOR)(audio, sampling_rate=SAMPLE_RATE).input_values)
    features = torch.from_numpy(features).float().unsqueeze(0)
    with torch.no_grad():
        embeddings = model(features, seq_len=FPS, output_hidden_states=True)
    hidden_states = getattr(embeddings, "hidden_states", None)
    if hidden_states is None:
        raise AudioEmbeddingCheckError(
            "WanVideoWrapper's wav2vec2 model returned hidden_states=None, so MultiTalkWav2VecEmbeds would fail "
            "every job ('NoneType' object is not subscriptable); the transformers version does not fit the node pack."
        )
    return hidden_states


def check(wanvideo_dir: Path) -> str:
    """Run the audio path; returns a one-line summary, raises AudioEmbeddingCheckError otherwise."""
    import torch
    from transformers import Wav2Vec2Config

    config_path = wanvideo_dir / "multitalk" / "wav2vec2_config.json"
    config = Wav2Vec2Config(**json.loads(config_path.read_text(encoding="utf-8")))
    model_class = load_node_model_class(wanvideo_dir)
    with tempfile.TemporaryDirectory() as work_dir:
        model = build_model(model_class, config, Path(work_dir))
    hidden_states = embed_one_second(model)
    expected = config.num_hidden_layers + 1
    shapes = {tuple(h.shape) for h in hidden_states}
    if len(hidden_states) != expected or shapes != {(1, FPS, config.hidden_size)}:
        raise AudioEmbeddingCheckError(
            f"WanVideoWrapper's wav2vec2 model returned {len(hidden_states)} hidden states of shapes {sorted(shapes)}; "
            f"MultiTalkWav2VecEmbeds needs {expected} of (1, {FPS}, {config.hidden_size})."
        )
    stacked = torch.stack(hidden_states[1:], dim=1).squeeze(0)
    if not torch.isfinite(stacked).all():
        raise AudioEmbeddingCheckError("WanVideoWrapper's wav2vec2 model returned hidden states that are not finite.")
    return f"{len(hidden_states)} hidden states, audio embedding {tuple(stacked.shape)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wanvideo-dir", type=Path, required=True, help="the ComfyUI-WanVideoWrapper folder")
    args = parser.parse_args(argv)
    installed = ", ".join(f"{name} {version}" for name, version in versions().items())
    try:
        summary = check(args.wanvideo_dir)
    except AudioEmbeddingCheckError as exc:
        sys.stderr.write(f"error: {exc}\n(with {installed})\n")
        return 1
    sys.stdout.write(f"WanVideoWrapper's audio embedding works: {summary} (with {installed}).\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
