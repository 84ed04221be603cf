"""InfiniteTalk RunPod worker: request model, media inputs, workflow graphs, ComfyUI client, delivery."""

__version__ = "0.1.0"
