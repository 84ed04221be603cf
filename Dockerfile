# syntax=docker/dockerfile:1
# InfiniteTalk RunPod worker: ComfyUI + kijai's WanVideoWrapper and friends at pinned commits, every
# Python package from one lock (requirements-image.lock), the model files (baked in with
# --build-arg BAKE_MODELS=true, otherwise read from the network volume), and the handler. Layers go
# from least to most often changed, so a code change rebuilds seconds of image and never downloads
# or copies models again.
#
#   docker build -t infinitetalk-worker .                                   # models from the volume
#   docker build --build-arg BAKE_MODELS=true --secret id=hf_token,env=HF_TOKEN -t infinitetalk-worker .

# CUDA 12.8 runtime (cudart and the driver hooks); torch's CUDA 12.8 wheels bring cuBLAS and cuDNN
# themselves (the nvidia-* packages of the lock), so the larger cudnn-runtime image would only
# duplicate them. 12.8 runs on every GPU RunPod offers: Ampere (sm80/86), Ada (sm89), Hopper (sm90)
# and Blackwell (sm100/120).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
# true: the model files of workflows/models.json go into the image, one layer per file.
ARG BAKE_MODELS=false

FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# gcc and the Python headers: Triton (torch.compile, SageAttention) compiles small launchers at run time.
# tini: PID 1 that forwards RunPod's SIGTERM to the handler and ComfyUI and reaps orphans.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.12 python3.12-venv python3.12-dev gcc libc6-dev \
        git ca-certificates curl ffmpeg libgl1 libglib2.0-0 tini \
    && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# One environment for ComfyUI and the worker.
RUN python3.12 -m venv /opt/venv \
    && pip install --no-cache-dir pip==25.2

# ---------------------------------------------------------------- the model files (BAKE_MODELS=true only)
# A stage of its own that depends on the manifest, the downloader and its two packages alone: no
# change to the lock or the worker downloads the models again. A Hugging Face token, if needed, comes
# in as a build secret, never an ARG.
FROM base AS models
COPY requirements-download.lock /opt/build/requirements-download.lock
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r /opt/build/requirements-download.lock
COPY workflows/models.json infinitetalk_worker/model_download.py /opt/build/
RUN --mount=type=secret,id=hf_token,required=false \
    HF_TOKEN="$(cat /run/secrets/hf_token 2>/dev/null || true)" \
    python /opt/build/model_download.py download-models \
        --manifest /opt/build/models.json --models-dir /models --jobs 4

# ---------------------------------------------------------------- ComfyUI, the nodes, every package
FROM base AS runtime

# Every package, in one pass, from the lock: ComfyUI's, the nodes' and the worker's requirements
# resolved together (README, "The image lock"), each file checked against its hash. torch 2.8.0 on
# PyPI is the CUDA 12.8 build. --no-deps: the lock is the whole resolution, and it holds onnxruntime-gpu
# where kokoro-onnx names the CPU onnxruntime (the same module). pip check through image_lock.py:
# nothing installed disagrees with anything else, that substitution aside.
COPY requirements-image.lock /opt/build/requirements-image.lock
COPY scripts/image_lock.py /opt/build/image_lock.py
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: --no-deps -r /opt/build/requirements-image.lock \
    && python /opt/build/image_lock.py pip-check

# ComfyUI and each custom node at the commits of the pinned stack; a test checks that these equal
# the stack the recorded /object_info came from (tests/data/comfyui/README.md).
ARG COMFYUI_REPO=https://github.com/Comfy-Org/ComfyUI
ARG COMFYUI_COMMIT=a125cd84b054a57729b5eecab930ca9408719832
ARG WANVIDEOWRAPPER_REPO=https://github.com/kijai/ComfyUI-WanVideoWrapper
ARG WANVIDEOWRAPPER_COMMIT=6b286552b7ad470daf2f664ba9396781921ca6d2
ARG KJNODES_REPO=https://github.com/kijai/ComfyUI-KJNodes
ARG KJNODES_COMMIT=aa89c147d04a03173a09604999b703c9e10916e1
ARG VIDEOHELPERSUITE_REPO=https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite
ARG VIDEOHELPERSUITE_COMMIT=6e7f63867584bb1fb4944d36172e7f98436da9a1
ARG MELBANDROFORMER_REPO=https://github.com/kijai/ComfyUI-MelBandRoFormer
ARG MELBANDROFORMER_COMMIT=b40e263224778ec417114d91d8b3b39934e30de5

COPY scripts/fetch_pinned.sh /opt/build/fetch_pinned.sh
RUN bash /opt/build/fetch_pinned.sh /comfyui "${COMFYUI_REPO}" "${COMFYUI_COMMIT}" \
    && bash /opt/build/fetch_pinned.sh /comfyui/custom_nodes/ComfyUI-WanVideoWrapper "${WANVIDEOWRAPPER_REPO}" "${WANVIDEOWRAPPER_COMMIT}" \
    && bash /opt/build/fetch_pinned.sh /comfyui/custom_nodes/ComfyUI-KJNodes "${KJNODES_REPO}" "${KJNODES_COMMIT}" \
    && bash /opt/build/fetch_pinned.sh /comfyui/custom_nodes/ComfyUI-VideoHelperSuite "${VIDEOHELPERSUITE_REPO}" "${VIDEOHELPERSUITE_COMMIT}" \
    && bash /opt/build/fetch_pinned.sh /comfyui/custom_nodes/ComfyUI-MelBandRoFormer "${MELBANDROFORMER_REPO}" "${MELBANDROFORMER_COMMIT}"

# The build fails here when the lock was not compiled from exactly these requirements files, when
# WanVideoWrapper's wav2vec2 model gives no hidden states (transformers 5.x does that; every job
# would fail), or when ComfyUI cannot import a custom node.
COPY requirements-image.in /opt/build/requirements-image.in
COPY scripts/check_audio_embeddings.py scripts/check_custom_nodes.py /opt/build/
RUN python /opt/build/image_lock.py check-sources --comfyui-dir /comfyui --input /opt/build/requirements-image.in \
    && python /opt/build/check_audio_embeddings.py --wanvideo-dir /comfyui/custom_nodes/ComfyUI-WanVideoWrapper \
    && python /opt/build/check_custom_nodes.py --comfyui-dir /comfyui \
    && rm -rf /comfyui/user /comfyui/temp /comfyui/output

# Model files on a network volume: /runpod-volume/models/<folder>/<file>.
COPY scripts/extra_model_paths.yaml /comfyui/extra_model_paths.yaml

# ---------------------------------------------------------------- with or without the models
FROM runtime AS runtime-models-false

# One layer per model file (a test keeps these lines equal to workflows/models.json): a registry
# pushes and a worker pulls them in parallel, and a changed file replaces one layer, not all.
FROM runtime AS runtime-models-true
COPY --from=models /models/diffusion_models/Wan2_1-I2V-14B-480p_fp8_e4m3fn_scaled_KJ.safetensors /comfyui/models/diffusion_models/
COPY --from=models /models/diffusion_models/Wan2_1-InfiniteTalk-Single_fp8_e4m3fn_scaled_KJ.safetensors /comfyui/models/diffusion_models/
COPY --from=models /models/diffusion_models/Wan2_1-InfiniteTalk-Multi_fp8_e4m3fn_scaled_KJ.safetensors /comfyui/models/diffusion_models/
COPY --from=models /models/loras/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors /comfyui/models/loras/
COPY --from=models /models/vae/Wan2_1_VAE_bf16.safetensors /comfyui/models/vae/
COPY --from=models /models/text_encoders/umt5-xxl-enc-bf16.safetensors /comfyui/models/text_encoders/
COPY --from=models /models/clip_vision/clip_vision_h.safetensors /comfyui/models/clip_vision/
COPY --from=models /models/wav2vec2/wav2vec2-chinese-base_fp16.safetensors /comfyui/models/wav2vec2/
COPY --from=models /models/diffusion_models/MelBandRoformer_fp16.safetensors /comfyui/models/diffusion_models/
COPY --from=models /models/kokoro/kokoro-v1.0.onnx /comfyui/models/kokoro/
COPY --from=models /models/kokoro/voices-v1.0.bin /comfyui/models/kokoro/

# hadolint ignore=DL3006
FROM runtime-models-${BAKE_MODELS}

# Image defaults of the settings (README, "Settings"); entrypoint.sh reads the same names.
# RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true skips the SDK's system checks (memory, disk, a connection to
# 8.8.8.8:53, the CUDA version, a CUDA initialisation and a matrix multiply with torch inside the
# handler process, whose CUDA context would hold GPU memory ComfyUI needs for the worker's whole
# life). The SDK's GPU check still runs: its gpu_test binary (or nvidia-smi) in a process of its
# own, which exits; RUNPOD_SKIP_GPU_CHECK=true would skip that too. entrypoint.sh checks the rest:
# ComfyUI must start on the GPU and `python -m infinitetalk_worker check` must pass.
# HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE: a job never downloads a model; a missing one is an error.
ENV COMFYUI_DIR=/comfyui \
    COMFYUI_PYTHON=/opt/venv/bin/python \
    WORKER_PYTHON=/opt/venv/bin/python \
    COMFYUI_PORT=8188 \
    WORKFLOW_DIR=/app/workflows \
    VOLUME_ROOT=/runpod-volume \
    WAN_ATTENTION_MODE=auto \
    RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# The worker itself: the most often changed part, last.
WORKDIR /app
COPY scripts/ scripts/
COPY examples/ examples/
COPY workflows/ workflows/
COPY infinitetalk_worker/ infinitetalk_worker/
COPY handler.py entrypoint.sh test_input.json requirements.txt ./

# No CMD: with no arguments the handler serves RunPod; `docker run IMAGE --rp_serve_api
# --rp_api_host 0.0.0.0` (or any other SDK flag) is passed through to it. tini -g signals the whole
# process group, so ComfyUI stops with the handler.
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "bash", "/app/entrypoint.sh"]
