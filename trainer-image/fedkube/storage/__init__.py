"""Files the engine writes: safetensors models and checkpoints, JSON results. Always atomic."""
