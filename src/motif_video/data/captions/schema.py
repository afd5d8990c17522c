"""The captioning request and the strict parser of its answer (the report's Sec. 5 caption schema).

The request asks, in a fixed order, about the camera (shot type, angle, motion), the subject, the
action, the environment, lighting and colour and on-screen text (for images: composition and
verbatim text instead of time); it forbids ungrounded claims, frame-by-frame narration and mood
commentary, and asks for JSON with exactly the fields below. An answer that is not that JSON is
`Malformed` (the captioner asks again, a bounded number of times).
"""

from __future__ import annotations

import json
import re

FIELDS = {
    "caption_long": str,
    "caption_short": str,
    "style": str,
    "subject": str,
    "action": str,
    "camera_move": str,
    "quality": str,
    "watermark": bool,
    "nsfw": bool,
    "padded": bool,
    "multi_scene": bool,
    "timelapse": bool,
}
LONG_WORDS = (150, 250)
SHORT_WORDS = (15, 25)
ACTIONS = ("Static", "Dynamic")
QUALITIES = ("high", "medium", "low")
REJECTING_TAGS = ("watermark", "nsfw", "padded", "multi_scene", "timelapse")

_RULES = (
    "Describe only what is visible. Do not guess at anything that cannot be seen (names, places, intentions), "
    "do not narrate frame by frame, and do not comment on mood, beauty or quality in the captions."
)
_ANSWER = (
    "Answer with one JSON object and nothing else, with exactly these fields: "
    '"caption_long" (150 to 250 words), "caption_short" (one sentence of 15 to 25 words), '
    '"style" (e.g. live action, animation, 3D render, screen recording), "subject" (one category: people, animals, '
    "vehicles, nature, architecture, food, objects, sports, text or graphics, other), "
    '"action" ("Static" or "Dynamic"), "camera_move" (e.g. static, pan left, tilt up, zoom in, tracking, handheld), '
    '"quality" ("high", "medium" or "low": sharpness, compression, noise), and the booleans "watermark" (a logo or '
    'watermark is burned in), "nsfw", "padded" (black or blurred bars), "multi_scene" (more than one shot), '
    '"timelapse".'
)
VIDEO_PROMPT = (
    "These are frames sampled uniformly from one video clip, in order. Write its captions in this order of "
    "content: the camera (shot type, angle, motion), the main subject, the action, the environment, the lighting "
    f"and colour, then any on-screen text. {_RULES} {_ANSWER}"
)
IMAGE_PROMPT = (
    "This is one image. Write its captions in this order of content: the composition and framing, the main "
    "subject, the environment, the lighting and colour, then any visible text transcribed verbatim. "
    f"{_RULES} {_ANSWER}"
)


class Malformed(ValueError):
    """An answer that is not the asked JSON; the message says what is wrong."""


def first_sentence(text: str) -> str:
    match = re.match(r"(.+?[.!?])(\s|$)", text.strip(), flags=re.S)
    return (match.group(1) if match else text.strip()).strip()


def parse(answer: str) -> dict:
    """The answer's fields, checked, plus caption_truncated (the first sentence of caption_long)."""
    text = answer.strip()
    fenced = re.search(r"```(?:json)?\s*(\{.*\})\s*```", text, flags=re.S)  # models often fence their JSON
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise Malformed("no JSON object in the answer")
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError as e:
        raise Malformed(f"invalid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(data, dict):
        raise Malformed("the JSON is not an object")
    missing, extra = sorted(set(FIELDS) - set(data)), sorted(set(data) - set(FIELDS))
    if missing or extra:
        raise Malformed(f"fields missing {missing}, unexpected {extra}")
    for name, kind in FIELDS.items():
        if not isinstance(data[name], kind) or (kind is str and not data[name].strip()):
            raise Malformed(f"{name} must be a {'non-empty string' if kind is str else 'boolean'}, got {data[name]!r}")
    long_words, short_words = len(data["caption_long"].split()), len(data["caption_short"].split())
    if not LONG_WORDS[0] <= long_words <= LONG_WORDS[1]:
        raise Malformed(f"caption_long has {long_words} words, not {LONG_WORDS[0]}-{LONG_WORDS[1]}")
    if not SHORT_WORDS[0] <= short_words <= SHORT_WORDS[1]:
        raise Malformed(f"caption_short has {short_words} words, not {SHORT_WORDS[0]}-{SHORT_WORDS[1]}")
    if data["action"] not in ACTIONS or data["quality"] not in QUALITIES:
        raise Malformed(
            f"action must be one of {ACTIONS} and quality one of {QUALITIES}, got "
            f"{data['action']!r} and {data['quality']!r}"
        )
    data["caption_truncated"] = first_sentence(data["caption_long"])
    return data
