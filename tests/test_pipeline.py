"""Our generation pipeline against diffusers' MotifVideoPipeline / MotifVideoImage2VideoPipeline.

Tiny random components of the real classes (T5Gemma2 encoder with its SigLIP tower, a word-level
tokenizer, AutoencoderKLWan, MotifVideoTransformer3DModel, FlowMatchEuler) are saved in the
official layout; both pipelines load that directory and run with the same seed and settings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from motif_video.random_weights import build_random_pipeline
from motif_video.sampling.guidance import GuidanceConfig
from motif_video.sampling.pipeline import MotifVideoPipeline, load_image

SIZE = dict(height=32, width=48, frames=9)
PROMPT = "a red circle moves left on gray background"


@pytest.fixture(scope="module", params=["apg", "cfg"])
def tiny_dir(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"tiny-{request.param}")
    build_random_pipeline(path, guider=request.param)
    return path


@pytest.fixture(scope="module")
def apg_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-apg-only")
    build_random_pipeline(path, guider="apg")
    return path


def _reference(tiny_dir, image):
    from diffusers import MotifVideoImage2VideoPipeline
    from diffusers import MotifVideoPipeline as DiffusersT2V

    cls = MotifVideoImage2VideoPipeline if image is not None else DiffusersT2V
    pipe = cls.from_pretrained(tiny_dir)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(
        prompt=PROMPT, height=SIZE["height"], width=SIZE["width"], num_frames=SIZE["frames"], num_inference_steps=4
    )
    if image is not None:
        kwargs["image"] = image
    latents = pipe(**kwargs, generator=torch.Generator().manual_seed(5), output_type="latent").frames
    frames = pipe(**kwargs, generator=torch.Generator().manual_seed(5), output_type="np").frames
    return latents, frames


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_matches_diffusers_pipeline(tiny_dir, task, tmp_path):
    image = None
    if task == "i2v":
        pixels = (np.random.default_rng(0).random((SIZE["height"], SIZE["width"], 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "first.png")
        image = Image.open(tmp_path / "first.png").convert("RGB")
    expected_latents, expected_frames = _reference(tiny_dir, image)

    ours = MotifVideoPipeline.from_pretrained(tiny_dir)
    first = load_image(tmp_path / "first.png", SIZE["height"], SIZE["width"]) if image is not None else None
    out = ours(PROMPT, image=first, steps=4, seed=5, progress=False, **SIZE)
    torch.testing.assert_close(out.latents, expected_latents, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.frames.numpy(), expected_frames, rtol=0, atol=1e-4)
    assert out.frames.shape == (1, 9, 32, 48, 3)


def test_guidance_config_comes_from_the_weights(tiny_dir):
    pipe = MotifVideoPipeline.from_pretrained(tiny_dir)
    if "apg" in tiny_dir.name:
        assert pipe.guidance == GuidanceConfig()  # the released settings, written by diffusers' guider
    else:
        assert pipe.guidance == GuidanceConfig(kind="cfg", scale=5.0, original_formulation=False)


def test_videos_do_not_depend_on_batch_or_offload(apg_dir):
    pipe = MotifVideoPipeline.from_pretrained(apg_dir, offload=True)
    alone = pipe(PROMPT, steps=2, seed=11, progress=False, **SIZE)
    batch = pipe(["a blue square moves up", PROMPT], steps=2, seed=10, progress=False, **SIZE)
    torch.testing.assert_close(batch.latents[1:], alone.latents, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batch.latents[0], batch.latents[1])


@pytest.mark.parametrize("task", ["t2v", "i2v"])
def test_split_guidance_passes_give_the_batched_latents(apg_dir, task):
    """Two unpadded calls (the accelerator path) and one padded, masked batch (the CPU path) agree;
    the prompt and the negative prompt have different lengths, so the batched form pads one."""
    pipe = MotifVideoPipeline.from_pretrained(apg_dir)
    image = None
    if task == "i2v":
        image = torch.rand(3, SIZE["height"], SIZE["width"], generator=torch.Generator().manual_seed(1)) * 2 - 1
    kwargs = dict(negative_prompt="gray", image=image, steps=3, seed=4, progress=False, **SIZE)
    batched = pipe(["a blue square moves up", PROMPT], guidance_passes="batched", **kwargs)
    assert pipe.last_passes == "batched"
    split = pipe(["a blue square moves up", PROMPT], guidance_passes="split", **kwargs)
    assert pipe.last_passes == "split"
    torch.testing.assert_close(split.latents, batched.latents, rtol=1e-5, atol=1e-5)
    pipe(PROMPT, guidance_passes="auto", **kwargs)
    assert pipe.last_passes == "batched"  # auto on a CPU
    from motif_video.sampling.sampler import resolve_passes

    assert resolve_passes("auto", "cuda:0") == "split"
    with pytest.raises(ValueError, match="unknown guidance passes 'both'"):
        resolve_passes("both", "cpu")


def test_guidance_math():
    from motif_video.sampling.guidance import Guidance

    g = torch.Generator().manual_seed(0)
    cond, uncond = torch.randn(2, 4, 3, 5, 6, generator=g), torch.randn(2, 4, 3, 5, 6, generator=g)
    cfg = GuidanceConfig(kind="cfg", scale=1.0, original_formulation=False)
    assert not cfg.active and torch.equal(Guidance(cfg)(cond, uncond), cond)  # scale 1 is the conditional
    cfg = GuidanceConfig(kind="cfg", scale=4.0, original_formulation=False)
    torch.testing.assert_close(Guidance(cfg)(cond, uncond), uncond + 4 * (cond - uncond))
    # APG without momentum or clipping and eta 1 reduces to CFG
    apg = GuidanceConfig(kind="apg", scale=4.0, momentum=None, norm_threshold=0.0, eta=1.0, original_formulation=False)
    torch.testing.assert_close(Guidance(apg)(cond, uncond), uncond + 4 * (cond - uncond))
    # eta 0 drops the part parallel to cond: the update is orthogonal to cond per (sample, frame)
    apg = GuidanceConfig(kind="apg", scale=1.0, momentum=None, norm_threshold=0.0, eta=0.0)
    update = Guidance(apg)(cond, uncond) - cond
    dot = (update.double() * cond.double()).sum(dim=(1, 3, 4))
    assert dot.abs().max() < 1e-5
    with pytest.raises(ValueError, match="unknown guidance 'pag'"):
        GuidanceConfig(kind="pag")


@pytest.mark.parametrize("scheduler", ["euler", "dpm++", "unipc"])
def test_every_scheduler_generates(apg_dir, scheduler):
    pipe = MotifVideoPipeline.from_pretrained(apg_dir)
    out = pipe(PROMPT, steps=3, seed=0, progress=False, scheduler=scheduler, shift=5.0, **SIZE)
    assert torch.isfinite(out.frames).all() and out.frames.shape == (1, 9, 32, 48, 3)
    assert out.frames.min() >= 0 and out.frames.max() <= 1


def test_schedule_follows_shift_and_rejects_bad_values():
    from motif_video.sampling.schedule import load_scheduler, set_timesteps

    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
    plain = set_timesteps(load_scheduler(config), 3, 100, "cpu")
    # sigmas linspace(1, 1/3, 3) shifted by 3: s' = 3s / (1 + 2s)
    torch.testing.assert_close(plain, torch.tensor([1000.0, 857.142857, 600.0]))
    stronger = set_timesteps(load_scheduler(config, shift=15.0), 3, 100, "cpu")
    assert (stronger[1:] > plain[1:]).all()  # a larger shift spends more steps at high noise
    with pytest.raises(ValueError, match="unknown scheduler 'ddim'"):
        load_scheduler(config, "ddim")
    with pytest.raises(ValueError, match="shift must be > 0"):
        load_scheduler(config, shift=0.0)


def test_bfloat16_generation_runs_and_stays_close(apg_dir):
    full = MotifVideoPipeline.from_pretrained(apg_dir)(PROMPT, steps=2, seed=0, progress=False, **SIZE)
    half = MotifVideoPipeline.from_pretrained(apg_dir, dtype=torch.bfloat16)(
        PROMPT, steps=2, seed=0, progress=False, **SIZE
    )
    assert half.frames.dtype == torch.float32 and torch.isfinite(half.frames).all()
    assert (half.frames - full.frames).abs().mean() < 0.05


def test_compiled_blocks_give_the_eager_video(tmp_path):
    """`compile=True` (torch.compile per block, CPU inductor here) changes no output; blocks of one kind
    share their compiled graphs (fewer graphs than blocks); a new prompt length recompiles once, with
    dynamic sizes, and a third length compiles nothing more."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from motif_video.random_weights import tiny_transformer_config

    cfg = tiny_transformer_config().replace(num_dual_blocks=3, num_single_blocks=4, num_decoder_blocks=2)
    build_random_pipeline(tmp_path, cfg, guider="apg")
    torch._dynamo.reset()
    counters.clear()
    eager = MotifVideoPipeline.from_pretrained(tmp_path)
    compiled = MotifVideoPipeline.from_pretrained(tmp_path, compile=True)
    model = compiled.transformer
    blocks = [*model.dual_blocks, *model.single_blocks, *model.decoder_blocks]
    assert all(b._compiled_call_impl is not None for b in blocks)
    assert eager.transformer.dual_blocks[0]._compiled_call_impl is None
    graphs = []
    for prompt in (PROMPT, "a blue square moves up", "a red circle moves up"):
        a = eager(prompt, steps=2, seed=3, progress=False, **SIZE).latents
        b = compiled(prompt, steps=2, seed=3, progress=False, **SIZE).latents
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
        graphs.append(counters["stats"]["unique_graphs"])
    assert 0 < graphs[0] < len(blocks)  # 9 blocks of 3 kinds
    assert graphs[2] == graphs[1]  # the third prompt length reused the dynamic graphs
    assert len(compiled.last_step_seconds) == 2
