"""Training the small video autoencoder on prepared shapes clips."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from motif_video.data.preprocess import PrepareConfig, prepare
from motif_video.model.vae import PatchAutoencoder, VideoAutoencoder, load_autoencoder, smooth_joins
from motif_video.training.autoencoder import AutoencoderConfig, load_clips, train_autoencoder


def test_autoencoder_learns_and_saves_normalised_latents(tmp_path):
    prepare("shapes:6", tmp_path / "clips", PrepareConfig(fps=8, frame_buckets=(9,), area=32 * 32), progress=False)
    result = train_autoencoder(
        tmp_path / "clips", tmp_path / "vae", AutoencoderConfig(z_dim=4, base_dim=8, steps=60, lr=3e-3), progress=False
    )
    assert result["reconstruction_l1"] < 0.7 * result["reconstruction_l1_before"], result
    vae = VideoAutoencoder.from_pretrained(tmp_path / "vae")
    assert vae.z_dim == 4 and vae.latent_shape(9, 32, 32) == (4, 3, 4, 4)
    clips = torch.stack(load_clips(tmp_path / "clips"))
    latents = vae.encode(clips, sample=False)  # normalised with the saved statistics
    assert latents.shape == (6, 4, 3, 4, 4)
    assert latents.mean(dim=(0, 2, 3, 4)).abs().max() < 1e-3
    assert (latents.std(dim=(0, 2, 3, 4)) - 1).abs().max() < 1e-2
    assert vae.decode(latents).shape == clips.shape


def test_patch_autoencoder_reconstructs_the_shapes_world(tmp_path):
    prepare("shapes:24", tmp_path / "clips", PrepareConfig(fps=8, frame_buckets=(9,), area=32 * 32), progress=False)
    cfg = AutoencoderConfig(kind="patch-pca", z_dim=16, spatial_factor=4)
    result = train_autoencoder(tmp_path / "clips", tmp_path / "vae", cfg, progress=False)
    vae = load_autoencoder(tmp_path / "vae")
    assert isinstance(vae, PatchAutoencoder) and vae.latent_shape(9, 32, 32) == (16, 3, 8, 8)
    clips = torch.stack(load_clips(tmp_path / "clips"))
    latents = vae.encode(clips)  # the Wan layout: first frame alone, then chunks of 4 frames
    assert latents.shape == (24, 16, 3, 8, 8)
    assert latents.mean(dim=(0, 2, 3, 4)).abs().max() < 1e-3
    assert abs(float(latents.std()) - 1) < 1e-2  # one scale for all channels: principal ones stay larger
    spread = latents.std(dim=(0, 2, 3, 4))
    assert spread[0] > 2 * spread[-1]
    error = (vae.decode(latents) - clips).abs().mean()
    assert error < 0.05 and abs(result["reconstruction_l1"] - error) < 0.02, (error, result)
    # a single frame (an image) is just the first-frame part
    assert torch.equal(vae.encode(clips[:, :, :1]), latents[:, :, :1])
    assert vae.decode(latents[:, :, :1]).shape == (24, 3, 1, 32, 32)
    # one latent space for every frame: a still clip has the same latent in frame 0 and later
    still = vae.encode(clips[:, :, :1].expand(-1, -1, 9, -1, -1))
    assert torch.allclose(still[:, :, :1].expand_as(still), still, atol=1e-5)
    # whiten = 2: the two leading components at unit variance, the others as with one scale
    whitened = AutoencoderConfig(kind="patch-pca", z_dim=16, spatial_factor=4, whiten=2)
    train_autoencoder(tmp_path / "clips", tmp_path / "vae-whitened", whitened, progress=False)
    z = load_autoencoder(tmp_path / "vae-whitened").encode(clips)
    assert torch.allclose(z.std(dim=(0, 2, 3, 4))[:2], torch.ones(2), atol=1e-2)
    torch.testing.assert_close(z[:, 2:], latents[:, 2:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        load_autoencoder(tmp_path / "vae-whitened").decode(z), vae.decode(latents), atol=1e-4, rtol=1e-4
    )
    # each component's sign fixed (its largest entry positive), so a refit whose randomised PCA starts
    # elsewhere (another seed) gives the same leading components, not some of them flipped
    basis = vae.tensors["basis"]
    assert (basis.gather(0, basis.abs().argmax(dim=0, keepdim=True)) > 0).all()
    train_autoencoder(tmp_path / "clips", tmp_path / "vae-seed", replace(cfg, seed=1), progress=False)
    refit = load_autoencoder(tmp_path / "vae-seed").tensors["basis"]
    torch.testing.assert_close(refit[:, :8], basis[:, :8], atol=1e-3, rtol=0)  # the trailing ones converge less
    # too many components for a chunk patch (3 x 4 frames x 4 x 4 = 192 values)
    with pytest.raises(ValueError, match="exceeds the 192 values of a patch"):
        bad = AutoencoderConfig(kind="patch-pca", z_dim=200, spatial_factor=4)
        train_autoencoder(tmp_path / "clips", tmp_path / "bad", bad)


def test_join_smoothing_spreads_the_step_at_each_latent_join_and_leaves_motion_alone(tmp_path):
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 1, 8, 8, generator=g) * 0.5
    t = torch.arange(17, dtype=torch.float32).view(1, 1, 17, 1, 1)
    chunk_of = torch.cat([torch.zeros(1), 1 + (torch.arange(1, 17) - 1) // 4]).view(1, 1, 17, 1, 1)
    # steady change (a brightness ramp): no step beyond the motion, nothing moves
    ramp = base + 0.01 * t
    torch.testing.assert_close(smooth_joins(ramp, 4, 0.1), ramp)
    # a still frame plus a step of 0.05 at every join (each latent frame's own error): the steps become a
    # ramp through the chunks' middle frames (0, 2.5, 6.5, 10.5, 14.5)
    stair = base + 0.05 * chunk_of
    smooth = smooth_joins(stair, 4, 0.1)
    change = smooth.diff(dim=2).abs().amax(dim=(0, 1, 3, 4))
    assert float(stair.diff(dim=2).abs().max()) == pytest.approx(0.05)
    assert float(change.max()) <= 0.05 / 2.5 + 1e-6  # the first join's step spread over 2.5 frames
    assert float(change[4:14].max()) == pytest.approx(0.05 / 4, abs=1e-6)  # the others over 4
    torch.testing.assert_close(smooth[:, :, 0], stair[:, :, 0])  # the first (given) frame stays
    torch.testing.assert_close(smooth[:, :, -1], stair[:, :, -1])  # past the last middle: held flat
    # a moving edge (a large change at one frame) moves no pixel by more than the limit; limit 0 is off
    edge = (torch.arange(8).view(1, 1, 1, 1, 8) < t / 2).float().expand(1, 3, 17, 8, 8)
    assert float((smooth_joins(edge, 4, 0.1) - edge).abs().max()) <= 0.1 + 1e-6
    assert torch.equal(smooth_joins(stair, 4, 0.0), stair) and torch.equal(
        smooth_joins(stair[:, :, :2], 4, 0.1), stair[:, :, :2]
    )
    # the autoencoder's config turns it on: fitted with it, saved with it, decoded with it
    prepare("shapes:8", tmp_path / "clips", PrepareConfig(fps=8, frame_buckets=(17,), area=32 * 32), progress=False)
    cfg = AutoencoderConfig(kind="patch-pca", z_dim=16, spatial_factor=4, join_smoothing=0.1)
    train_autoencoder(tmp_path / "clips", tmp_path / "vae", cfg, progress=False)
    vae = load_autoencoder(tmp_path / "vae")
    assert vae.config["join_smoothing"] == 0.1 and vae.join_smoothing == 0.1
    noisy = vae.encode(torch.stack(load_clips(tmp_path / "clips")))
    noisy = noisy + 0.3 * torch.randn(noisy.shape, generator=g)  # latent frames with errors of their own
    smoothed = vae.decode(noisy)
    vae.join_smoothing = 0.0
    plain = vae.decode(noisy)
    joins = [0, 4, 8, 12]  # frame 0 -> 1, 4 -> 5, ...: the differences across latent frames

    def across(v):
        return float(v.diff(dim=2).abs().mean(dim=(0, 1, 3, 4))[joins].mean())

    assert across(smoothed) < 0.8 * across(plain)
    torch.testing.assert_close(smoothed[:, :, 0], plain[:, :, 0])


def test_detail_decoder_redraws_edges_and_round_trips(tmp_path):
    """The patch autoencoder's non-linear decode: it starts as the linear decode (zero last layer),
    training lowers the reconstruction error, it is saved and loaded with the components, and
    `detail_scale` sets the detail channels' spread."""
    from motif_video.model.vae import DetailDecoder
    from motif_video.training.autoencoder import permute_colors, train_detail_decoder

    prepare("shapes:16", tmp_path / "clips", PrepareConfig(fps=8, frame_buckets=(9,), area=32 * 32), progress=False)
    clips = torch.stack(load_clips(tmp_path / "clips"))
    base = dict(kind="patch-pca", z_dim=8, spatial_factor=4, whiten=2)
    train_autoencoder(tmp_path / "clips", tmp_path / "linear", AutoencoderConfig(**base), progress=False)
    linear = load_autoencoder(tmp_path / "linear")
    latents = linear.encode(clips)
    untrained = DetailDecoder(8, 4, 4)
    torch.testing.assert_close(untrained(linear.decode(latents), latents), linear.decode(latents))

    cfg = AutoencoderConfig(**base, decoder_steps=60, decoder_batch=8, detail_scale=0.8)
    result = train_autoencoder(tmp_path / "clips", tmp_path / "decoder", cfg, progress=False)
    assert result["decoder"]["last_loss"] < 0.8 * result["decoder"]["first_loss"], result
    assert result["reconstruction_l1"] < result["reconstruction_l1_linear"], result
    vae = load_autoencoder(tmp_path / "decoder")
    assert vae.decoder is not None and vae.config["decoder"] == vae.decoder.settings
    z = vae.encode(clips)
    spread = z.std(dim=(0, 2, 3, 4))
    assert torch.allclose(spread[:2], torch.ones(2), atol=1e-2)  # whitened
    assert abs(float(z[:, 2:].std()) - 0.8) < 0.02  # the detail channels at detail_scale, one common factor
    factor = z[:, 2:].std() / latents[:, 2:].std()  # the same components as the linear fit, scaled alike
    assert factor > 1.5
    torch.testing.assert_close(z[:, 2:], latents[:, 2:] * factor, atol=1e-4, rtol=1e-4)
    decoded = vae.decode(z)
    assert decoded.shape == clips.shape
    assert (decoded - clips).abs().mean() < (vae.decode_linear(z) - clips).abs().mean()
    # frame by frame: a clip decoded alone equals its row of a batch, and a single image works
    torch.testing.assert_close(vae.decode(z[3:4]), decoded[3:4], atol=1e-5, rtol=1e-5)
    assert vae.decode(z[:2, :, :1]).shape == (2, 3, 1, 32, 32)
    # a decoder fitted on latents put off the data's by noise redraws noised latents better than one
    # fitted on clean latents (a sampled latent is never exactly a clip's)
    noised = z + 0.3 * torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    robust, _ = train_detail_decoder(vae, clips, replace(cfg, decoder_noise=0.4), False)  # as `vae`'s, with noise
    errors = [float((model.decode(noised) - clips).square().mean()) for model in (vae, robust)]
    assert errors[1] < 0.9 * errors[0], errors
    # colour augmentation permutes the channels of each clip; gray stays gray
    mixed = permute_colors(clips, torch.Generator().manual_seed(0))
    assert sorted(mixed[0].flatten().tolist()) == sorted(clips[0].flatten().tolist())
    gray = torch.zeros(4, 3, 9, 8, 8)
    assert torch.equal(permute_colors(gray, torch.Generator().manual_seed(0)), gray)


def test_detail_decoder_context_reads_the_neighbouring_latent_frames(tmp_path):
    """`decoder_context`: the decoder of a frame reads the latent frames either side of its own (the ends
    repeated), is saved with that setting, and, fitted on noised latents, draws the frames either side of a
    join between latent frames closer together than a decoder that sees its own latent frame alone."""
    from motif_video.model.vae import DetailDecoder
    from motif_video.training.autoencoder import train_detail_decoder

    prepare("shapes:16", tmp_path / "clips", PrepareConfig(fps=8, frame_buckets=(9,), area=32 * 32), progress=False)
    clips = torch.stack(load_clips(tmp_path / "clips"))
    base = dict(kind="patch-pca", z_dim=8, spatial_factor=4, whiten=2, decoder_batch=8, decoder_noise=0.4)
    cfg = AutoencoderConfig(**base, decoder_steps=200, decoder_context=1)
    train_autoencoder(tmp_path / "clips", tmp_path / "context", cfg, progress=False)
    vae = load_autoencoder(tmp_path / "context")
    assert vae.decoder.context == 1 and vae.config["decoder"]["context"] == 1
    z = vae.encode(clips[:2])  # [2, 8, 3, 8, 8]: latent frames 0 (frame 0), 1 (frames 1-4), 2 (frames 5-8)
    # the grid a frame reads: its own latent frame between its neighbours, clamped at the ends
    chunk, _ = vae.decoder.frame_places(9)
    grid = vae.decoder.latent_grid(z, chunk)  # [2, 9, 3 x 8, 8, 8]
    torch.testing.assert_close(grid[:, 0], torch.cat([z[:, :, 0], z[:, :, 0], z[:, :, 1]], dim=1))
    torch.testing.assert_close(grid[:, 4], torch.cat([z[:, :, 0], z[:, :, 1], z[:, :, 2]], dim=1))
    torch.testing.assert_close(grid[:, 8], torch.cat([z[:, :, 1], z[:, :, 2], z[:, :, 2]], dim=1))
    # changing the last latent frame changes frames 1-4 (they see it) and leaves frame 0 (it does not)
    changed = z.clone()
    changed[:, :, 2] += 1.0
    before, after = vae.decode(z), vae.decode(changed)
    assert torch.equal(before[:, :, 0], after[:, :, 0])
    assert (before[:, :, 1:5] - after[:, :, 1:5]).abs().max() > 1e-3
    # an untrained context decoder is the linear decode
    untrained = DetailDecoder(8, 4, 4, context=2)
    torch.testing.assert_close(untrained(vae.decode_linear(z), z), vae.decode_linear(z))
    # on latents noised frame by frame, the jump across the join (frame 4 -> 5) against the clip's
    alone, _ = train_detail_decoder(vae, clips, replace(cfg, decoder_context=0), False)
    noised = vae.encode(clips) + 0.4 * torch.randn(vae.encode(clips).shape, generator=torch.Generator().manual_seed(1))

    def join_error(model) -> float:  # how far the decoded change across the join is from the clip's own
        decoded = model.decode(noised)
        return float(((decoded[:, :, 5] - decoded[:, :, 4]) - (clips[:, :, 5] - clips[:, :, 4])).abs().mean())

    errors = [join_error(model) for model in (alone, vae)]
    assert errors[1] < 0.9 * errors[0], errors


def test_detail_decoder_contrast_loss_weighs_low_contrast_frames_up(tmp_path):
    """`decoder_contrast`: each frame's error is weighed by TYPICAL_CONTRAST / (its std + floor), so an
    object on gray counts as much as one on black; a decoder fitted so draws the gray-background clips
    closer than one fitted with the plain loss, relative to the black ones."""
    from motif_video.data import world
    from motif_video.eval.shape_loss import to_pixels
    from motif_video.training.autoencoder import TYPICAL_CONTRAST, contrast_weight, train_detail_decoder

    def clip(background: str, seed: int) -> torch.Tensor:
        obj = world.ShapeObject(("green", "purple", "white")[seed % 3], world.SHAPES[seed % 3], "left", 0.5, 0.6)
        return to_pixels(world.render(world.Scene((obj,), background, "plain"), 9, 32, 32))[0]

    gray, black = clip("gray", 0), clip("black", 0)
    weights = contrast_weight(torch.stack([gray[:, 0], black[:, 0]])).flatten()
    assert weights[0] > 1.3 * weights[1], weights  # the same object, less contrast on gray: more weight
    flat = torch.zeros(1, 3, 8, 8)
    assert float(contrast_weight(flat)) == pytest.approx(TYPICAL_CONTRAST / 0.05)  # the floor bounds it
    noisy = flat + 0.25 * torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert float(contrast_weight(noisy)) == pytest.approx(TYPICAL_CONTRAST / 0.30, rel=0.1)

    prepare("shapes:16", tmp_path / "clips", PrepareConfig(fps=8, frame_buckets=(9,), area=32 * 32), progress=False)
    cfg = AutoencoderConfig(kind="patch-pca", z_dim=8, spatial_factor=4, whiten=2, detail_scale=0.8)
    train_autoencoder(tmp_path / "clips", tmp_path / "linear", cfg, progress=False)
    linear = load_autoencoder(tmp_path / "linear")
    grays = torch.stack([clip("gray", s) for s in range(6)])
    blacks = torch.stack([clip("black", s) for s in range(6)])
    fit = replace(cfg, decoder_steps=150, decoder_batch=16)
    ratios = []
    both = torch.cat([grays, blacks])
    for contrast in (False, True):
        vae, _ = train_detail_decoder(linear, both, replace(fit, decoder_contrast=contrast), False)
        error = [float((vae.decode(vae.encode(v)) - v).square().mean()) for v in (grays, blacks)]
        ratios.append(error[0] / error[1])
    assert ratios[1] < 0.9 * ratios[0], ratios  # gray drawn closer, relative to black, with the contrast loss
