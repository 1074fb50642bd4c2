#!/usr/bin/env python
"""Write small synthetic video datasets (moving shapes) in the MSRVTT-QA, MSR-VTT, MSVD and custom formats.

    python tools/make_synthetic.py OUT_DIR [--kind all] [--num-videos 12] [--frames 16] [--size 64] [--seed 0]

The logic lives in ``mammut_video.data.synthetic.make_synthetic``; see its docstring for the layouts.
"""

from __future__ import annotations

import argparse
import sys
import time

import mammut_video  # noqa: F401  (installs the torchvision guard before anything imports it)
from mammut_video.data.synthetic import KINDS, make_synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out_dir", help="folder to write the dataset(s) into (one sub-folder per kind)")
    parser.add_argument("--kind", choices=[*KINDS, "all"], default="all",
                        help="which dataset format(s) to write")
    parser.add_argument("--num-videos", type=int, default=12, help="videos per dataset (>= 3)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (8 fps)")
    parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels (even)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed: the same seed writes the same files")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    paths = make_synthetic(args.out_dir, kind=args.kind, num_videos=args.num_videos, frames=args.frames,
                           size=args.size, seed=args.seed)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    print(f"wrote {len(paths)} dataset(s) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
