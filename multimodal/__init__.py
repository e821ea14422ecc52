"""multimodal package."""
