"""The Motif-Video denoiser and its layers (see transformer.py for the architecture figure)."""
