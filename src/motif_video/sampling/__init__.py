"""Sampling: schedules, guidance, the denoising loop and the generation pipeline."""
