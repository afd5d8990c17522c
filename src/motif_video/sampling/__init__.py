"""Sampling: schedules, guidance, the denoising loop and the generation pipeline.

The names below are the sampling choices the command line offers; they live here, away from torch, so
that `motif-video --help` answers without loading it.
"""

SCHEDULERS = ("euler", "dpm++", "unipc")
HANDOVER_FRAMES = 8  # new frames over which a seam's change is spread, by default (4 before join smoothing)
