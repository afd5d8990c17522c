"""Where the vision-language model runs: a server that speaks the OpenAI chat-completions API (how
`vllm serve` exposes Qwen3-VL-30B-A3B to a cluster), or local transformers weights (a Qwen2.5-VL or
Qwen3-VL class folder). Both take the same request: one prompt and the clip's frames; both return the
answer's text."""

from __future__ import annotations

import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np


class CaptionServerError(ConnectionError):
    """The server did not answer usefully (after the retries); the message names the URL."""


def data_url(frame: np.ndarray, quality: int = 90) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


class ServerBackend:
    """POST {api_url}/chat/completions; the frames as image_url data URLs in one user message.
    5xx answers, time-outs and refused connections are retried with exponential backoff."""

    def __init__(
        self,
        api_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout: float = 120.0,
        retries: int = 4,
        backoff: float = 1.0,
        max_tokens: int = 1024,
        temperature: float = 0.2,
    ) -> None:
        if not api_url.startswith(("http://", "https://")):
            raise ValueError(f"--api-url must start with http:// or https://, got {api_url!r}")
        self.url = api_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.key = None
        if api_key_env:
            self.key = os.environ.get(api_key_env)
            if not self.key:
                raise ValueError(f"--api-key-env {api_key_env}: that environment variable is not set")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.max_tokens, self.temperature = max_tokens, temperature
        self.name = f"{model} at {api_url}"

    def __call__(self, prompt: str, frames: list[np.ndarray]) -> str:
        content = [{"type": "text", "text": prompt}]
        content += [{"type": "image_url", "image_url": {"url": data_url(f)}} for f in frames]
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    reply = json.loads(response.read())
                return reply["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} {e.reason}"
                if e.code < 500 and e.code != 429:  # a request the server will never accept: say so now
                    detail = e.read()[:300].decode(errors="replace")
                    raise CaptionServerError(f"{self.url} refused the request: {last}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                last = "an answer that is not a chat completion"
        raise CaptionServerError(f"no answer from {self.url} after {self.retries + 1} tries ({last})")


class LocalBackend:
    """A Qwen2.5-VL / Qwen3-VL class model from a local folder, through transformers. The image
    processor is the PIL one (the default needs torchvision); the image placeholder tokens are
    expanded here to the number of merged patches of each frame, as the model's processor does."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: str = "float32", max_tokens: int = 1024):
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer
        from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

        folder = Path(model_dir)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"--model-dir {folder} has no config.json (a Qwen2.5-VL / Qwen3-VL folder)")
        config = AutoConfig.from_pretrained(folder)
        if "vl" not in config.model_type:
            raise ValueError(
                f"--model-dir {folder} holds a {config.model_type!r} model; expected Qwen2.5-VL or Qwen3-VL"
            )
        self.torch = torch
        self.device = torch.device(device)
        self.model = AutoModelForImageTextToText.from_pretrained(folder, dtype=getattr(torch, dtype)).to(self.device)
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"  # batched generation continues every row at its end
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if (folder / "preprocessor_config.json").is_file():
            self.images = Qwen2VLImageProcessorPil.from_pretrained(folder)
        else:
            self.images = Qwen2VLImageProcessorPil()
        vision = config.vision_config
        self.images.patch_size = vision.patch_size
        self.images.temporal_patch_size = vision.temporal_patch_size
        self.images.merge_size = vision.spatial_merge_size
        self.image_token = self.tokenizer.convert_ids_to_tokens(config.image_token_id)
        self.max_tokens = max_tokens
        self.name = f"local {folder.name}"

    def _text(self, prompt: str, tokens_per_image: list[int]) -> str:
        images = "".join(f"<|vision_start|>{self.image_token * n}<|vision_end|>" for n in tokens_per_image)
        return f"<|im_start|>user\n{images}{prompt}<|im_end|>\n<|im_start|>assistant\n"

    def batch(self, requests: list[tuple[str, list[np.ndarray]]]) -> list[str]:
        """One generate call for several clips (left-padded)."""
        from PIL import Image

        texts, pixels, grids = [], [], []
        merge = self.images.merge_size**2
        for prompt, frames in requests:
            out = self.images(images=[Image.fromarray(f) for f in frames], return_tensors="pt")
            grid = out["image_grid_thw"]
            texts.append(self._text(prompt, [int(g.prod()) // merge for g in grid]))
            pixels.append(out["pixel_values"])
            grids.append(grid)
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True)
        inputs["pixel_values"] = self.torch.cat(pixels).to(self.model.dtype)
        inputs["image_grid_thw"] = self.torch.cat(grids)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        with self.torch.inference_mode():
            generated = self.model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False)
        new = generated[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

    def __call__(self, prompt: str, frames: list[np.ndarray]) -> str:
        return self.batch([(prompt, frames)])[0]
