#!/usr/bin/env python
"""`make demo`: the project's main job, end to end, on data made here.

1. writes a small synthetic MSRVTT-QA dataset (moving shapes, the exact MSRVTT-QA file format);
2. builds the `mammut-video-tiny` model (random weights: nothing can be downloaded here) and
   saves it as a checkpoint;
3. runs `mammut-video eval msrvtt-qa` on the test split: a metrics table, metrics.json and
   predictions.jsonl in demo_out/eval;
4. captions one clip and answers one question with the same model.

With random weights the accuracy is near zero: the demo shows the pipeline, not a score.
Point `--checkpoint` at a converted checkpoint (`mammut-video convert`) for real numbers.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import mammut_video as mv
from mammut_video.commands import main as cli


def run(out: Path, num_videos: int, frames: int) -> int:
    import torch

    from mammut_video.data import load_qa, make_synthetic

    if out.exists():
        shutil.rmtree(out)
    print(f"[1/4] synthetic MSRVTT-QA dataset -> {out / 'data'}")
    data = make_synthetic(out / "data", kind="msrvtt", num_videos=num_videos, frames=16, size=96, seed=0)["msrvtt"]

    print("[2/4] mammut-video-tiny, random weights -> checkpoint", out / "ckpt")
    torch.manual_seed(0)
    model = mv.create_model("mammut-video-tiny", num_frames=frames)
    model.save_pretrained(out / "ckpt")

    print("[3/4] mammut-video eval msrvtt-qa")
    argv = ["eval", "msrvtt-qa", "--data-root", str(data), "--checkpoint", str(out / "ckpt"),
            "--split", "test", "--out", str(out / "eval"), "--workers", "0"]
    print("      $ mammut-video " + " ".join(argv))
    code = cli(argv)
    if code != 0:
        return code

    print("[4/4] caption and answer one clip")
    record = load_qa("msrvtt-qa", "test", data_root=data).records[0]
    model = mv.load_model(out / "ckpt")
    clip = model.preprocess(mv.read_clip(record.video, num_frames=frames))[None]
    with torch.inference_mode():
        caption = model.caption(clip, max_new_tokens=12)[0]
        answer = model.answer(clip, [record.question], max_new_tokens=4)[0]
    print(f"      {record.video.name}: caption: {caption!r}")
    print(f"      Q: {record.question}  A: {answer!r}  (reference: {record.answer!r})")
    print(f"done: see {out / 'eval' / 'metrics.json'} and predictions.jsonl")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (replaced)")
    parser.add_argument("--num-videos", type=int, default=12, help="synthetic videos to write")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip fed to the model")
    args = parser.parse_args(argv)
    return run(args.out, args.num_videos, args.frames)


if __name__ == "__main__":
    sys.exit(main())
