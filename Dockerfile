# syntax=docker/dockerfile:1
# InfiniteTalk RunPod worker: ComfyUI + kijai's WanVideoWrapper and friends at pinned commits, the
# model files (baked in with --build-arg BAKE_MODELS=true, otherwise read from the network volume),
# and the handler. Layers go from least to most often changed, so a code change rebuilds seconds of
# image and never downloads models again.
#
#   docker build -t infinitetalk-worker .                                   # models from the volume
#   docker build --build-arg BAKE_MODELS=true --secret id=hf_token,env=HF_TOKEN -t infinitetalk-worker .

# CUDA 12.8 runtime (cudart and the driver hooks); torch's cu128 wheels bring cuBLAS and cuDNN
# themselves, so the larger cudnn-runtime image would only duplicate them. 12.8 runs on every GPU
# RunPod offers: Ampere (sm80/86), Ada (sm89), Hopper (sm90) and Blackwell (sm100/120).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
FROM ${BASE_IMAGE}

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
    && pip install --no-cache-dir pip==25.2 setuptools==80.9.0 wheel==0.45.1

# torch first, from its CUDA 12.8 index; the constraints keep every later install from replacing it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.8.0
ARG TORCHVISION_VERSION=0.23.0
ARG TORCHAUDIO_VERSION=2.8.0
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" "torchaudio==${TORCHAUDIO_VERSION}" \
    && printf 'torch==%s\ntorchvision==%s\ntorchaudio==%s\n' \
        "${TORCH_VERSION}" "${TORCHVISION_VERSION}" "${TORCHAUDIO_VERSION}" >/opt/torch-constraints.txt

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

# ComfyUI's and every node's requirements in one resolution, so they agree with each other.
RUN for file in /comfyui/requirements.txt /comfyui/custom_nodes/*/requirements.txt; do \
        cat "${file}"; echo; \
    done >/opt/build/comfyui-requirements.txt \
    && pip install --no-cache-dir -c /opt/torch-constraints.txt -r /opt/build/comfyui-requirements.txt

# SageAttention is optional: WAN_ATTENTION_MODE=auto uses it only where it imports and runs, else
# sdpa. Whether it installed is recorded in the build log and in /opt/sageattention-status.
ARG SAGEATTENTION_VERSION=1.0.6
RUN if pip install --no-cache-dir -c /opt/torch-constraints.txt "sageattention==${SAGEATTENTION_VERSION}"; then \
        echo "sageattention ${SAGEATTENTION_VERSION}: installed" | tee /opt/sageattention-status; \
    else \
        echo "sageattention ${SAGEATTENTION_VERSION}: NOT installed; WAN_ATTENTION_MODE=auto will use sdpa" \
            | tee /opt/sageattention-status; \
    fi

# The build fails here if ComfyUI cannot import a custom node.
COPY scripts/check_custom_nodes.py /opt/build/check_custom_nodes.py
RUN python /opt/build/check_custom_nodes.py --comfyui-dir /comfyui \
    && rm -rf /comfyui/user /comfyui/temp /comfyui/output

# Model files on a network volume: /runpod-volume/models/<folder>/<file>.
COPY scripts/extra_model_paths.yaml /comfyui/extra_model_paths.yaml

# Models, only when asked. This layer depends on the manifest and the downloader alone, so no other
# change re-downloads them. A Hugging Face token, if needed, comes in as a build secret, never an ARG.
ARG BAKE_MODELS=false
COPY workflows/models.json /opt/build/models.json
COPY infinitetalk_worker/model_download.py /opt/build/model_download.py
RUN --mount=type=secret,id=hf_token,required=false \
    if [ "${BAKE_MODELS}" = "true" ]; then \
        HF_TOKEN="$(cat /run/secrets/hf_token 2>/dev/null || true)" \
        python /opt/build/model_download.py download-models \
            --manifest /opt/build/models.json --models-dir /comfyui/models --jobs 4; \
    else \
        echo "BAKE_MODELS=${BAKE_MODELS}: no models in the image; they are read from /runpod-volume/models"; \
    fi

# The worker's own packages; where ComfyUI's stack already has one, its version stays.
COPY requirements.txt /opt/build/worker-requirements.txt
COPY scripts/pin_to_installed.py /opt/build/pin_to_installed.py
RUN python /opt/build/pin_to_installed.py /opt/build/worker-requirements.txt \
        /opt/build/worker-requirements-fitted.txt /opt/build/installed-constraints.txt \
    && pip install --no-cache-dir -c /opt/build/installed-constraints.txt -r /opt/build/worker-requirements-fitted.txt \
    && python /opt/build/check_custom_nodes.py --comfyui-dir /comfyui \
    && rm -rf /comfyui/user /comfyui/temp /comfyui/output

# Image defaults of the settings (README, "Settings"); entrypoint.sh reads the same names.
# RUNPOD_SKIP_AUTO_SYSTEM_CHECKS: the SDK's own start-up checks import torch and open a CUDA context
# inside the handler process, which then holds GPU memory ComfyUI needs for the whole life of the
# worker, and they fail outright where 8.8.8.8 is unreachable. entrypoint.sh checks fitness instead:
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
