"""Stage 6, near-duplicates: descriptor per clip, neighbours above a cosine, union-find, one representative.

The report embeds frame #10 of every clip (SSCD, 512-d), links pairs with cosine >= 0.9 through an
ANN index, groups them with union-find and keeps, per group, the clip with the best score
0.5 * resolution + 0.3 * fps + 0.2 * file size, each min-max normalised inside the group.
Search: faiss's exact inner-product range search (faiss-cpu); the same index type scales to IVF.
"""

from __future__ import annotations

import numpy as np


def neighbours(descriptors: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (i < j, cosine) with cosine >= threshold; descriptors are unit rows [N, D]."""
    import faiss

    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if len(x) < 2:
        return []
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, sims, ids = index.range_search(x, threshold - 1e-6)
    pairs = []
    for i in range(len(x)):
        for s, j in zip(sims[lims[i] : lims[i + 1]], ids[lims[i] : lims[i + 1]], strict=True):
            if i < j:
                pairs.append((i, int(j), float(s)))
    return pairs


def groups(count: int, pairs: list[tuple[int, int, float]]) -> list[list[int]]:
    """Connected components (union-find with path halving) of the pairs, singletons left out."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    for i in range(count):
        members.setdefault(root(i), []).append(i)
    return [sorted(g) for g in members.values() if len(g) > 1]


def representative(resolution: np.ndarray, fps: np.ndarray, file_size: np.ndarray) -> int:
    """Index of the best member: 0.5 resolution + 0.3 fps + 0.2 file size, min-max normalised; ties: first."""

    def norm(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        span = v.max() - v.min()
        return (v - v.min()) / span if span > 0 else np.zeros_like(v)

    score = 0.5 * norm(resolution) + 0.3 * norm(fps) + 0.2 * norm(file_size)
    return int(np.argmax(score))
