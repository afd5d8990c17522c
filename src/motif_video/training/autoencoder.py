"""Training a small video autoencoder (diffusers' `AutoencoderKLWan` class) on prepared clips.

For models too small for the Wan2.1 VAE (the embedded default): the same class with a small
config, trained on the clips of `motif-video prepare` with an L1 + L2 reconstruction loss and a small
KL term. At the end, the per-channel mean and std of the posterior means over (up to 256 of) the training clips
become the config's `latents_mean` / `latents_std`, so the transformer sees normalised latents
exactly as with the released VAE, and the result is saved with `save_pretrained` as a `vae/`
directory of a pipeline.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from motif_video.data.shards import iterate_shard
from motif_video.media import read_video


@dataclass(frozen=True)
class AutoencoderConfig:
    # "wan": diffusers' AutoencoderKLWan, trained by gradient descent; "patch-pca": the linear
    # space-time patch autoencoder (model/vae.py PatchAutoencoder), fitted by PCA in seconds.
    kind: str = "wan"
    z_dim: int = 8
    base_dim: int = 16
    steps: int = 2000
    batch_size: int = 2
    lr: float = 1e-3
    kl_weight: float = 1e-6
    window: int = 0  # > 0: train on random windows of this many frames (1 + 4k); 0: whole clips
    crop: int = 0  # > 0: train on random crops of crop x crop pixels (the model is convolutional)
    spatial_factor: int = 8  # 8 (Wan2.1: three 2x stages) or 4 (two); time is always 4x
    initial_logvar: float = -10.0  # the posterior starts nearly deterministic (see train_autoencoder)
    whiten: int = 0  # patch-pca: the leading components scaled to unit variance (fit_patch_autoencoder)
    # patch-pca: > 0 scales the other (detail) components, all by one factor, to this root mean square
    # in the normalised latents; 0 divides them by the std of all projections (v16: ~0.3)
    detail_scale: float = 0.0
    # patch-pca: > 0 trains a DetailDecoder (model/vae.py) for this many steps of `decoder_batch`
    # frames on the fitted latents (0: the linear decode alone)
    decoder_steps: int = 0
    decoder_batch: int = 32
    decoder_lr: float = 3e-3
    # patch-pca: the components and the decoder see each clip with its RGB channels in a random order,
    # so that neither ties a shape to the colours it happened to have in the training clips
    color_augment: bool = False
    # patch-pca: the DetailDecoder learns to redraw the clip from its latents plus Gaussian noise of a
    # standard deviation drawn in [0, decoder_noise] per clip (normalised latent units): a sampled latent
    # is never exactly on the data's, and a decoder fitted on clean latents draws the error as a grid
    decoder_noise: float = 0.0
    # patch-pca: the DetailDecoder also reads this many latent frames on each side of a frame's own
    # (0: its own alone), so that the frames either side of a join between latent frames agree
    decoder_context: int = 0
    # patch-pca: the DetailDecoder's error on each frame divided by that frame's contrast (its pixels' std),
    # so that an edge on a gray background counts as much as one on black; with the plain loss a shape's
    # corners on gray came back rounded (contrast_weight below)
    decoder_contrast: bool = False
    # patch-pca: the DetailDecoder's latent path: channels (its unfolded features per pixel: width / 8) and
    # residual 3 x 3 layers; 128 and 4 drew triangles on gray right more often than 64 and 3 (0.83 of the
    # frames against 0.71) but made one extension seam of the embedded model 1.5007x: not shipped
    decoder_width: int = 64
    decoder_depth: int = 3
    # patch-pca: the decode spreads the step at each join between latent frames over the chunks beside
    # it, steps clipped to this many pixel units of [-1, 1] (model/vae.py smooth_joins; 0: off)
    join_smoothing: float = 0.0
    seed: int = 0
    path: str = ""  # reuse this fitted autoencoder (a vae/ folder) instead of fitting one: stages share latents


def load_clips(clips_dir: str | Path, limit: int | None = None) -> list[torch.Tensor]:
    """Every clip of a prepare folder as [3, F, H, W] in [-1, 1] (they are small)."""
    clips = []
    for shard in sorted(Path(clips_dir).glob("shard-*.tar")):
        for _, mp4 in iterate_shard(shard):
            frames, _ = read_video(mp4)
            clips.append(torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1)
            if limit is not None and len(clips) >= limit:
                return clips
    if not clips:
        raise FileNotFoundError(f"{clips_dir} has no clips (run `motif-video prepare` first)")
    return clips


@torch.no_grad()
def reconstruction_error(vae, clips: list[torch.Tensor]) -> float:
    """Mean absolute error (pixels in [-1, 1]) of decoding the posterior mean, over whole clips."""
    was_training = vae.training
    vae.eval()
    errors = [(vae.decode(vae.encode(c[None]).latent_dist.mode()).sample - c[None]).abs().mean() for c in clips]
    vae.train(was_training)
    return float(torch.stack(errors).mean())


def train_autoencoder(
    clips_dir: str | Path, out_dir: str | Path, cfg: AutoencoderConfig = AutoencoderConfig(), progress: bool = True
) -> dict:
    """Train, normalise and save; returns the reconstruction error before and after (whole clips,
    posterior mean), the first and last training losses and the latent statistics."""
    from diffusers import AutoencoderKLWan

    if cfg.kind == "patch-pca":
        return fit_patch_autoencoder(clips_dir, out_dir, cfg, progress)
    if cfg.kind != "wan":
        raise ValueError(f"autoencoder.kind must be 'wan' or 'patch-pca', got {cfg.kind!r}")
    clips = load_clips(clips_dir)
    shapes = {tuple(c.shape) for c in clips}
    if len(shapes) > 1:
        raise ValueError(f"clips of one shape are expected (one bucket), found {sorted(shapes)}")
    frames, height, width = clips[0].shape[1:]
    window, crop = cfg.window or frames, cfg.crop or min(height, width)
    if crop > min(height, width) or crop % cfg.spatial_factor:
        raise ValueError(f"autoencoder crop must be a multiple of {cfg.spatial_factor} within the clips, got {crop}")
    if window > frames or (window - 1) % 4:
        raise ValueError(f"autoencoder window must be 1 + 4k frames and at most the clip's {frames}, got {window}")
    if cfg.spatial_factor not in (4, 8):
        raise ValueError(f"autoencoder.spatial_factor must be 4 or 8, got {cfg.spatial_factor}")
    torch.manual_seed(cfg.seed)
    stages = 3 if cfg.spatial_factor == 8 else 2
    vae = AutoencoderKLWan(
        base_dim=cfg.base_dim,
        z_dim=cfg.z_dim,
        dim_mult=[1] + [2] * stages,
        num_res_blocks=1,
        temperal_downsample=[False] * (stages - 2) + [True, True],
        latents_mean=[0.0] * cfg.z_dim,
        latents_std=[1.0] * cfg.z_dim,
        scale_factor_spatial=cfg.spatial_factor,
    )
    # At the default init the posterior's log-variance is ~0: the sampled latent is mostly noise,
    # the decoder learns the mean colour, and the encoder barely trains (we saw exactly that).
    # Starting the log-variance head at `initial_logvar` makes it a near-deterministic autoencoder
    # from step one; the small KL term may still widen it.
    with torch.no_grad():
        vae.quant_conv.bias[cfg.z_dim :] = cfg.initial_logvar
    probe = clips[:: max(1, len(clips) // 16)][:16]  # reconstruction error before / after, on fixed clips
    error_before = reconstruction_error(vae, probe)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    losses = []
    vae.train()
    for _ in tqdm(range(cfg.steps), desc="autoencoder", disable=not progress):
        # Wan's VAE is causal (first frame alone, then chunks of 4): a window starting anywhere
        # trains the first-frame path and the chunk path on every frame of the clip.
        pick = torch.randint(len(clips), (cfg.batch_size,), generator=generator).tolist()
        starts = torch.randint(frames - window + 1, (cfg.batch_size,), generator=generator).tolist()
        video = torch.stack([clips[i][:, s : s + window] for i, s in zip(pick, starts, strict=True)])
        if crop < height:
            top, left = torch.randint(height - crop + 1, (2,), generator=generator).tolist()
            video = video[..., top : top + crop, left : left + crop]
        posterior = vae.encode(video).latent_dist
        reconstruction = vae.decode(posterior.sample(generator=generator)).sample
        # L1 keeps flat regions exact; the squared term puts the weight on large errors, which on
        # this data are the small objects (a few % of the pixels) rather than the background.
        error = reconstruction - video
        loss = error.abs().mean() + error.square().mean() + cfg.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    vae.eval()
    with torch.no_grad():  # normalisation statistics of the posterior means (256 clips are plenty)
        sample = clips[:: max(1, len(clips) // 256)]
        means = torch.cat([vae.encode(c[None]).latent_dist.mode().flatten(2) for c in sample], dim=2)
    mean, std = means.mean(dim=(0, 2)), means.std(dim=(0, 2)).clamp_min(1e-4)
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    vae.save_pretrained(out_dir)
    tail = max(1, len(losses) // 10)
    return {
        "reconstruction_l1_before": error_before,
        "reconstruction_l1": reconstruction_error(vae, probe),
        "first_loss": float(np.mean(losses[:tail])),
        "last_loss": float(np.mean(losses[-tail:])),
        "latents_mean": mean.tolist(),
        "latents_std": std.tolist(),
    }


@torch.no_grad()
def fit_patch_autoencoder(
    clips_dir: str | Path, out_dir: str | Path, cfg: AutoencoderConfig, progress: bool = False
) -> dict:
    """PCA of the chunk patches of (up to 512 of) the clips, the first frame as a still chunk ->
    PatchAutoencoder, normalised (per-channel mean; unit std for the first `whiten` components,
    one shared std for the rest), saved to `out_dir`."""
    from motif_video.model.vae import PatchAutoencoder, chunk_patches

    video = fitting_clips(clips_dir, cfg.spatial_factor, cfg)
    size = cfg.spatial_factor
    config = {
        "_class_name": "PatchAutoencoder",
        "z_dim": cfg.z_dim,
        "scale_factor_spatial": size,
        "scale_factor_temporal": 4,
        "latents_mean": [0.0] * cfg.z_dim,
        "latents_std": [1.0] * cfg.z_dim,
    } | ({"join_smoothing": cfg.join_smoothing} if cfg.join_smoothing else {})
    torch.manual_seed(cfg.seed)
    patches = chunk_patches(video, size, 4)
    flat = patches.reshape(-1, patches.shape[-1])
    if cfg.z_dim > flat.shape[1]:
        raise ValueError(f"autoencoder.z_dim {cfg.z_dim} exceeds the {flat.shape[1]} values of a patch")
    mean = flat.mean(dim=0)
    _, _, basis = torch.pca_lowrank(flat - mean, q=cfg.z_dim, center=False, niter=6)
    basis = basis[:, : cfg.z_dim]
    # A component's sign is arbitrary and came out of the randomised fit differently on clips that
    # differ in a few values (9 of v18's 16 flipped on a rebuild): fix it as scikit-learn's svd_flip
    # does, the largest entry of each component positive, so a refit gives the same latents.
    largest = basis.gather(0, basis.abs().argmax(dim=0, keepdim=True))
    tensors = {"mean": mean, "basis": (basis * largest.sign()).contiguous()}
    vae = PatchAutoencoder(config, tensors)
    # One scale for the detail components, not one per channel: their variances fall from ~0.3 to
    # ~0.02, and whitening all of them gave the flow loss equal weight on invisible detail; the
    # samples came out as coloured speckle. The first `whiten` components (a flat patch's
    # brightness and colour) get unit variance each: under one global scale the brightness
    # component was ~7x larger than the colour ones, so sampling settled brightness at high noise
    # and colour only in the last steps, and the objects came out in the wrong colours.
    z = vae.encode(video)  # the raw projections (mean 0, std 1 so far)
    spread, shared = z.std(dim=(0, 2, 3, 4)).tolist(), float(z.std())
    # The shape of an object lives in the detail components (docs/shapes-world.md, "Where the shape is
    # lost"): under the one global scale they sit at ~0.3 of the noise's std, and sampling settles
    # the layout before they carry any signal. `detail_scale` lifts them, still by one common factor.
    detail = z[:, cfg.whiten :]
    if cfg.detail_scale > 0 and detail.numel():
        centred = detail - detail.mean(dim=(0, 2, 3, 4), keepdim=True)
        shared = float(centred.square().mean().sqrt()) / cfg.detail_scale
    config["latents_mean"] = z.mean(dim=(0, 2, 3, 4)).tolist()
    config["latents_std"] = spread[: cfg.whiten] + [shared] * (cfg.z_dim - min(cfg.whiten, cfg.z_dim))
    vae = PatchAutoencoder(config, tensors)
    probe = video[:: max(1, len(video) // 16)][:16]
    result = {"reconstruction_l1": float((vae.decode(vae.encode(probe)) - probe).abs().mean())}
    if cfg.decoder_steps > 0:
        result["reconstruction_l1_linear"] = result["reconstruction_l1"]
        vae, result["decoder"] = train_detail_decoder(vae, video, cfg, progress)
        result["reconstruction_l1"] = float((vae.decode(vae.encode(probe)) - probe).abs().mean())
    vae.save_pretrained(out_dir)
    return result | {"latents_mean": config["latents_mean"], "latents_std": config["latents_std"]}


def fitting_clips(clips_dir: str | Path, size: int, cfg: AutoencoderConfig) -> Tensor:
    """What the patch autoencoder is fitted on: up to 512 clips of `clips_dir` as [N, 3, F, H, W], checked
    against the patch `size`, each with its RGB channels permuted when `cfg.color_augment`."""
    clips = load_clips(clips_dir, limit=512)
    shapes = {tuple(c.shape) for c in clips}
    if len(shapes) > 1:
        raise ValueError(f"{clips_dir}: clips of one shape are expected (one bucket), found {sorted(shapes)}")
    video = torch.stack(clips)
    if (video.shape[2] - 1) % 4 or video.shape[3] % size or video.shape[4] % size:
        raise ValueError(
            f"{clips_dir}: clips of 4k+1 frames and sides that are multiples of {size} expected, "
            f"got {video.shape[2]} frames of {video.shape[3]}x{video.shape[4]}"
        )
    if cfg.color_augment:
        video = permute_colors(video, torch.Generator().manual_seed(cfg.seed))
    return video


def refit_decoder(
    pipeline_dir: str | Path, clips_dir: str | Path, out_dir: str | Path, cfg: AutoencoderConfig, progress: bool = True
) -> dict:
    """A copy of the pipeline `pipeline_dir` whose patch autoencoder has a DetailDecoder fitted anew on the clips
    of `clips_dir` (`cfg`'s decoder settings and colour augmentation). The components stay as they are, and with
    them the latents the transformer was trained on: only the drawing of pixels from latents changes. The
    manifest (if any) records the refit; written beside `out_dir` and renamed. Returns the fit's figures."""
    import shutil

    from motif_video.model.vae import PatchAutoencoder, load_autoencoder

    pipeline_dir, out_dir = Path(pipeline_dir), Path(out_dir)
    if not (pipeline_dir / "vae" / "config.json").is_file():
        raise FileNotFoundError(f"{pipeline_dir} has no vae/config.json: is it a pipeline folder?")
    if out_dir.resolve() == pipeline_dir.resolve():
        raise ValueError(f"the refitted pipeline must go to another folder than {pipeline_dir}")
    if cfg.decoder_steps <= 0:
        raise ValueError(f"decoder steps must be positive, got {cfg.decoder_steps}")
    vae = load_autoencoder(pipeline_dir / "vae")
    if not isinstance(vae, PatchAutoencoder):
        raise ValueError(f"{pipeline_dir}/vae is not a patch autoencoder: only its DetailDecoder can be refitted")
    components = PatchAutoencoder({k: v for k, v in vae.config.items() if k != "decoder"}, vae.tensors)
    video = fitting_clips(clips_dir, vae.spatial_factor, cfg)
    refitted, result = train_detail_decoder(components, video, cfg, progress)
    probe = video[:: max(1, len(video) // 16)][:16]
    for name, model in (("reconstruction_l1_before", vae), ("reconstruction_l1", refitted)):
        result[name] = float((model.decode(model.encode(probe)) - probe).abs().mean())
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(pipeline_dir, partial)
    shutil.rmtree(partial / "vae")
    refitted.save_pretrained(partial / "vae")
    settings = {"clips": str(clips_dir), "context": cfg.decoder_context, "noise": cfg.decoder_noise}
    settings |= {"steps": cfg.decoder_steps, "batch": cfg.decoder_batch, "lr": cfg.decoder_lr}
    settings |= {"color_augment": cfg.color_augment, "seed": cfg.seed}
    settings |= {"contrast_loss": True} if cfg.decoder_contrast else {}
    settings |= {"width": cfg.decoder_width, "depth": cfg.decoder_depth}
    (partial / "vae" / "training.json").write_text(json.dumps({"refit": settings} | result, indent=2) + "\n")
    manifest = partial / "manifest.json"
    if manifest.is_file():
        info = json.loads(manifest.read_text())
        info["decoder_refit"] = settings | {"reconstruction_l1": result["reconstruction_l1"]}
        manifest.write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(partial, out_dir)
    return result


# The contrast of a typical training frame (pixels' std in [-1, 1]): contrast_weight is 1 there, so the
# contrast loss keeps the plain loss's scale and learning rate.
TYPICAL_CONTRAST = 0.25


def contrast_weight(frames: Tensor, floor: float = 0.05) -> Tensor:
    """Per frame of [N, 3, H, W], TYPICAL_CONTRAST / (its pixels' std + `floor`): the weight that makes an
    error relative to the frame's own contrast. An object on gray (110) differs from its background by about
    two thirds of what it does on black (15); under the plain L1 + 10 x L2 loss its edges weighed about half as
    much, and the fitted decoder rounded a triangle's corners on gray (docs/shapes-world.md, "v22")."""
    return TYPICAL_CONTRAST / (frames.std(dim=(1, 2, 3), keepdim=True) + floor)


def permute_colors(video: Tensor, generator: torch.Generator) -> Tensor:
    """Each clip [3, F, H, W] of `video` with its RGB channels in one of the 6 orders, drawn by `generator`:
    gray and black stay what they are, a red object may become a green or blue one."""
    orders = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])
    pick = orders[torch.randint(len(orders), (len(video),), generator=generator)]
    return torch.stack([clip[order] for clip, order in zip(video, pick, strict=True)])


@torch.enable_grad()  # called inside fit_patch_autoencoder's no_grad
def train_detail_decoder(vae, video: Tensor, cfg: AutoencoderConfig, progress: bool = True) -> tuple:
    """Fit a DetailDecoder to redraw `video` (clips [N, 3, F, H, W]) from `vae`'s latents and linear decode.

    Random frames, `cfg.decoder_batch` a step, AdamW with a cosine decay, L1 + 10 x L2: the squared term puts the
    weight on the few pixels where the linear decode is far off (edges and corners) rather than on
    the flat background. Returns the PatchAutoencoder with the decoder, and the first and last losses."""
    from motif_video.model.vae import DetailDecoder, PatchAutoencoder

    torch.manual_seed(cfg.seed)
    decoder = DetailDecoder(
        vae.z_dim,
        vae.spatial_factor,
        vae.temporal_factor,
        latent_channels=cfg.decoder_width,
        latent_layers=cfg.decoder_depth,
        unfold_channels=max(1, cfg.decoder_width // 8),
        context=cfg.decoder_context,
    )
    with torch.no_grad():  # fixed inputs: the components are not trained further
        latents = torch.cat([vae.encode(part) for part in video.split(64)])
        linear = torch.cat([vae.decode_linear(part) for part in latents.split(64)])
    frames = video.shape[2]
    chunk, place = decoder.frame_places(frames)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=cfg.decoder_lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for step in tqdm(range(cfg.decoder_steps), desc="detail decoder", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = cfg.decoder_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.decoder_steps))
        clip = torch.randint(len(video), (cfg.decoder_batch,), generator=generator)
        frame = torch.randint(frames, (cfg.decoder_batch,), generator=generator)
        given, drawn = latents[clip], linear[clip, :, frame]  # [B, Z, F', h, w], [B, 3, H, W]
        if cfg.decoder_noise > 0:  # each clip's latents off the data's by a drawn amount, decoded again
            scale = cfg.decoder_noise * torch.rand(len(clip), 1, 1, 1, 1, generator=generator)
            given = given + scale * torch.randn(given.shape, generator=generator)
            with torch.no_grad():
                drawn = vae.decode_linear(given)[torch.arange(len(clip)), :, frame]
        near = decoder.near_frames(chunk[frame], given.shape[2])  # [B, 2c+1]: each row's own latent frames
        grid = given[torch.arange(len(clip))[:, None], :, near].flatten(1, 2)  # [B, (2c+1) Z, h, w]
        out = decoder.redraw(drawn, grid, place[frame])
        target = video[clip, :, frame]
        error = (out - target) * (contrast_weight(target) if cfg.decoder_contrast else 1)
        loss = error.abs().mean() + 10 * error.square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    decoder.eval().requires_grad_(False)
    config = dict(vae.config) | {"decoder": decoder.settings}
    tensors = dict(vae.tensors) | {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    tail = max(1, len(losses) // 10)
    return PatchAutoencoder(config, tensors), {
        "steps": cfg.decoder_steps,
        "first_loss": float(np.mean(losses[:tail])),
        "last_loss": float(np.mean(losses[-tail:])),
    }
