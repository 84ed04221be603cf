"""The role vocabulary: which node input each request value is written to.

The worker never addresses nodes by id. A workflow marks each node it wants written with one or
more ``role:<name>`` tokens in ``_meta.title`` (e.g. ``"Load portrait role:image"`` or
``"role:audio_embeds role:num_frames"``). For every role, ``ROLE_INPUTS`` says, per node class,
which input receives which request value. Any workflow set carrying these roles can be dropped in.
"""

from __future__ import annotations

import re
from typing import Final

ROLE_PATTERN: Final = re.compile(r"role:([a-z0-9_]+)")

# role -> node class -> {value name: input name}
ROLE_INPUTS: Final[dict[str, dict[str, dict[str, str]]]] = {
    "image": {"LoadImage": {"image_file": "image"}},
    "video": {"VHS_LoadVideo": {"video_file": "video"}},
    "audio_1": {"LoadAudio": {"audio_1_file": "audio"}},
    "audio_2": {"LoadAudio": {"audio_2_file": "audio"}},
    "soundtrack": {"LoadAudio": {"soundtrack_file": "audio"}},
    "speaker_mask_1": {"LoadImageMask": {"speaker_mask_1_file": "image"}},
    "speaker_mask_2": {"LoadImageMask": {"speaker_mask_2_file": "image"}},
    "speaker_mask_background": {"LoadImageMask": {"speaker_mask_background_file": "image"}},
    "prompt": {
        "WanVideoTextEncodeCached": {"prompt": "positive_prompt", "negative_prompt": "negative_prompt"},
        "PrimitiveString": {"prompt": "value"},
    },
    "width": {
        "INTConstant": {"width": "value"},
        "PrimitiveInt": {"width": "value"},
        "ImageScale": {"width": "width"},
        "ImageResizeKJv2": {"width": "width"},
        "VHS_LoadVideo": {"width": "custom_width"},
        "EmptyImage": {"width": "width"},
        "SolidMask": {"width": "width"},
    },
    "height": {
        "INTConstant": {"height": "value"},
        "PrimitiveInt": {"height": "value"},
        "ImageScale": {"height": "height"},
        "ImageResizeKJv2": {"height": "height"},
        "VHS_LoadVideo": {"height": "custom_height"},
        "EmptyImage": {"height": "height"},
        "SolidMask": {"height": "height"},
    },
    "num_frames": {
        "MultiTalkWav2VecEmbeds": {"num_frames": "num_frames"},
        "INTConstant": {"num_frames": "value"},
        "PrimitiveInt": {"num_frames": "value"},
        "RepeatImageBatch": {"num_frames": "amount"},
        "VHS_LoadVideo": {"num_frames": "frame_load_cap"},
        "GetImageRangeFromBatch": {"num_frames": "num_frames"},
        "EmptyImage": {"num_frames": "batch_size"},
    },
    "sampler": {
        "WanVideoSampler": {
            "seed": "seed",
            "steps": "steps",
            "cfg": "cfg",
            "shift": "shift",
            "force_offload": "force_offload",
        },
        "ImageAddNoise": {"seed": "seed"},
    },
    "model": {"WanVideoModelLoader": {"attention_mode": "attention_mode", "load_device": "load_device"}},
    "image_embeds": {"WanVideoImageToVideoMultiTalk": {
        "force_offload": "force_offload", "tiled_vae": "tiled_vae", "motion_frame": "motion_frame",
        "colormatch": "colormatch"}},
    # memory profile (memory_profile.py): block swap and VAE tiling
    "block_swap": {"WanVideoBlockSwap": {"blocks_to_swap": "blocks_to_swap"}},
    "vae_tiling": {
        "WanVideoDecode": {"enable_vae_tiling": "enable_vae_tiling"},
        "WanVideoEncode": {"enable_vae_tiling": "enable_vae_tiling"},
    },
    "audio_embeds": {
        "MultiTalkWav2VecEmbeds": {"audio_scale": "audio_scale", "audio_cfg_scale": "audio_cfg_scale",
                                   "multi_audio_type": "multi_audio_type"},
    },
    # Marks the step-distillation LoRA, which quality 'reference' takes out of the graph (graph_edits).
    "distill_lora": {"WanVideoLoraSelect": {}},
    "output": {
        "VHS_VideoCombine": {"filename_prefix": "filename_prefix"},
        "SaveVideo": {"filename_prefix": "filename_prefix"},
    },
}

# Roles a job cannot run without, by job kind; a workflow lacking one is refused before submission.
REQUIRED_ROLES: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("image", "single"): ("image", "audio_1", "width", "height", "num_frames", "output"),
    ("image", "multi"): ("image", "audio_1", "audio_2", "soundtrack", "width", "height", "num_frames", "output"),
    ("video", "single"): ("video", "audio_1", "width", "height", "num_frames", "output"),
    ("video", "multi"): ("video", "audio_1", "audio_2", "soundtrack", "width", "height", "num_frames", "output"),
}

OUTPUT_ROLE: Final = "output"


def roles_of(node: dict) -> list[str]:
    """Return the roles a node carries in its ``_meta.title`` (empty when it has none)."""
    title = (node.get("_meta") or {}).get("title") or ""
    return ROLE_PATTERN.findall(str(title))
