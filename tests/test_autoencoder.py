"""Training the small video autoencoder on prepared shapes clips."""

from __future__ import annotations

import torch

from motif_video.data.preprocess import PrepareConfig, prepare
from motif_video.model.vae import VideoAutoencoder
from motif_video.training.autoencoder import AutoencoderConfig, load_clips, train_autoencoder


def test_autoencoder_learns_and_saves_normalised_latents(tmp_path):
    prepare("shapes:6", tmp_path / "clips", PrepareConfig(fps=8, frame_buckets=(9,), area=32 * 32), progress=False)
    result = train_autoencoder(
        tmp_path / "clips", tmp_path / "vae", AutoencoderConfig(z_dim=4, base_dim=8, steps=60, lr=3e-3), progress=False
    )
    assert result["last_loss"] < 0.7 * result["first_loss"], result
    vae = VideoAutoencoder.from_pretrained(tmp_path / "vae")
    assert vae.z_dim == 4 and vae.latent_shape(9, 32, 32) == (4, 3, 4, 4)
    clips = torch.stack(load_clips(tmp_path / "clips"))
    latents = vae.encode(clips, sample=False)  # normalised with the saved statistics
    assert latents.shape == (6, 4, 3, 4, 4)
    assert latents.mean(dim=(0, 2, 3, 4)).abs().max() < 1e-3
    assert (latents.std(dim=(0, 2, 3, 4)) - 1).abs().max() < 1e-2
    assert vae.decode(latents).shape == clips.shape
