"""Per-block cross-frame attention analysis (the report's Sec. on the DDT decoder's attention).

For one video, noised to a chosen flow time, one transformer forward runs with an
`AttentionProbe`: per block, the frame-to-frame attention matrix of the video queries (mean over
heads and queries), their attention mass on the context (text in the encoder, the encoder output
in the decoder) and a cross-frame score (attention mass off the query's own frame). The figure
is a grid of heatmaps, one per block, grouped by stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from motif_video.model.attention import AttentionProbe
from motif_video.model.transformer import MotifVideoTransformer
from motif_video.training.flow import TIMESTEP_SCALE, interpolate


@dataclass
class AttentionReport:
    stages: dict[int, str]  # block -> "dual" | "single" | "decoder"
    frame_matrix: dict[int, Tensor]
    context_mass: dict[int, float]
    cross_frame: dict[int, float]

    def to_dict(self) -> dict:
        return {
            str(b): {
                "stage": self.stages[b],
                "frame_matrix": self.frame_matrix[b].tolist(),
                "context_mass": self.context_mass[b],
                "cross_frame_score": self.cross_frame[b],
            }
            for b in sorted(self.stages)
        }

    def stage_means(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage in ("dual", "single", "decoder"):
            blocks = [b for b, s in self.stages.items() if s == stage]
            if blocks:
                out[stage] = {
                    "cross_frame_score": sum(self.cross_frame[b] for b in blocks) / len(blocks),
                    "context_mass": sum(self.context_mass[b] for b in blocks) / len(blocks),
                }
        return out


@torch.no_grad()
def analyze(
    transformer: MotifVideoTransformer,
    latents: Tensor,  # [1, Z, F, H, W] clean normalised latents
    text: Tensor,
    text_mask: Tensor,
    t: float = 0.5,
    seed: int = 0,
    chunk: int = 256,
) -> AttentionReport:
    cfg = transformer.cfg
    parameter = next(transformer.parameters())  # the analysis runs where the model is, in float32 inputs
    latents = latents.to(parameter.device, torch.float32)
    text, text_mask = text.to(parameter.device), None if text_mask is None else text_mask.to(parameter.device)
    _, z, frames, height, width = latents.shape
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed)).to(latents)
    x_t = interpolate(latents, noise, torch.tensor([t], device=latents.device))
    condition = torch.zeros(1, cfg.in_channels - z, frames, height, width, dtype=latents.dtype, device=latents.device)
    grid = cfg.token_grid(frames, height, width)
    probe = AttentionProbe(grid[0], grid[1] * grid[2], chunk=chunk)
    dtype = parameter.dtype
    transformer(
        torch.cat([x_t, condition], dim=1).to(dtype),
        torch.tensor([t * TIMESTEP_SCALE], device=latents.device),
        text.to(dtype),
        text_mask,
        probe=probe,
    )
    encoder_end = cfg.num_dual_blocks + cfg.num_single_blocks
    stages = {
        b: "dual" if b < cfg.num_dual_blocks else "single" if b < encoder_end else "decoder" for b in probe.frame_matrix
    }
    return AttentionReport(
        stages, probe.frame_matrix, probe.context_mass, {b: probe.cross_frame_score(b) for b in probe.frame_matrix}
    )


def video_latents(vae, path: str | Path, frames: int, height: int, width: int) -> Tensor:
    """The first `frames` frames of a video file, cover-cropped to height x width, as clean
    normalised latents [1, Z, F', H', W'] (the posterior mean)."""
    from motif_video.data.buckets import Bucket
    from motif_video.data.preprocess import cover_crop
    from motif_video.media import read_video

    try:
        video, _ = read_video(path)
    except Exception as e:  # PyAV raises many kinds for broken files
        raise ValueError(f"cannot read video {path}: {type(e).__name__}") from None
    if len(video) < frames:
        raise ValueError(f"{path} has {len(video)} frames, fewer than the {frames} asked for")
    clip = cover_crop(video[:frames], Bucket(frames, height, width))
    pixels = torch.from_numpy(clip.copy()).permute(3, 0, 1, 2)[None].float() / 127.5 - 1  # [1, 3, F, H, W]
    return vae.encode(pixels, sample=False)


def plot(report: AttentionReport, path: str | Path) -> Path:
    """Heatmaps of every block's frame-to-frame attention, one row per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from motif_video.media import atomic_write

    rows = [(s, [b for b in sorted(report.stages) if report.stages[b] == s]) for s in ("dual", "single", "decoder")]
    rows = [(s, blocks) for s, blocks in rows if blocks]
    columns = max(len(blocks) for _, blocks in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns + 1, 1.8 * len(rows) + 0.6), squeeze=False)
    for r, (stage, blocks) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(blocks):
                ax.axis("off")
                continue
            b = blocks[c]
            m = report.frame_matrix[b]
            ax.imshow((m / m.sum(dim=1, keepdim=True)).numpy(), cmap="magma", vmin=0)
            ax.set_title(f"{stage} {b}\ncross {report.cross_frame[b]:.2f} ctx {report.context_mass[b]:.2f}", fontsize=7)
        axes[r][0].set_ylabel(f"{stage}\nquery frame", fontsize=8)
    fig.suptitle("video-query attention\nrows: query frame, columns: key frame", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return Path(path)


def study(pipe, prompt: str, latents: Tensor, out: str | Path, t: float = 0.5, seed: int = 0, chunk: int = 256, **info):
    """The analysis of one video under its prompt, written as out/attention.png and out/attention.json
    (with `info`, e.g. where the video came from); returns the report."""
    from motif_video.media import write_json

    out = Path(out)
    text, mask = pipe.text_encoder.encode([prompt])
    report = analyze(pipe.transformer, latents, text, mask, t=t, seed=seed, chunk=chunk)
    plot(report, out / "attention.png")
    record = {"prompt": prompt, **info, "t": t, "blocks": report.to_dict(), "stages": report.stage_means()}
    write_json(record, out / "attention.json")
    return report
