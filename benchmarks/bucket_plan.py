"""Share of an epoch's samples that synchronous data-parallel training can use: the
bucket-balanced plan vs a naive global shuffle, on a skewed synthetic bucket mix, side by side.

The naive loader deals a global shuffle round-robin to the ranks; a step is usable only when every
rank's next batch is of the same bucket (synchronous steps need one shape across ranks), so the
other steps are lost. The balanced plan (data/buckets.py) assigns equal per-bucket batch counts to
every rank in advance.

    python benchmarks/bucket_plan.py --ranks 8 --batch 4
"""

from __future__ import annotations

import argparse

import numpy as np

from motif_video.data.buckets import balanced_plan, bucket_counts, naive_utilization, utilization


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 8, 64])
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    names = ["1x64x64", "17x48x80", "17x64x64", "33x48x80", "33x80x48"]
    mix = np.random.default_rng(0).choice(names, size=args.samples, p=[0.5, 0.2, 0.15, 0.1, 0.05]).tolist()
    print(f"{args.samples} samples, bucket mix {bucket_counts(mix)}, batch {args.batch} per rank")
    for ranks in args.ranks:
        ours = utilization(balanced_plan(mix, ranks, args.batch, seed=1), len(mix))
        naive = naive_utilization(mix, ranks, args.batch, seed=1)
        print(f"{ranks:3d} ranks: balanced plan {ours:.3f}   naive {naive:.3f}")


if __name__ == "__main__":
    main()
