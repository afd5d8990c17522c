"""Captions as metadata: a vision-language model answers one fixed request per clip with JSON (three
caption variants and structured tags); the tags feed back into the clip table's filters.

    schema.py     the request (the report's fixed order of questions) and the strict parser of the answer
    backends.py   an OpenAI-compatible server (vLLM) or local transformers weights (Qwen2.5-VL / Qwen3-VL)
    captioner.py  frames in, answers parsed and retried, results stored (resumable), tags applied
    select.py     domain-balanced subsets from the subject / style tags (SFT, 720p)
"""
