"""InfiniteTalk RunPod worker: request model, media inputs, workflow graphs, ComfyUI client, delivery."""

__version__ = "0.2.0"
