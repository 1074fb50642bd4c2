"""The ``eval`` sub-command (argument parsing only; the work is in ``mammut_video.eval.command``)."""

from __future__ import annotations

import argparse
import sys

TASK_NAMES = ("msrvtt-qa", "msvd-qa", "msrvtt-caption", "msvd-caption", "msrvtt-retrieval")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on MSRVTT-QA, MSVD-QA, MSR-VTT/MSVD captioning or MSR-VTT 1k-A retrieval",
        description=(
            "Evaluate a checkpoint on a benchmark split. QA: exact match after VQA normalisation over ALL "
            "questions (a clip that fails to decode counts wrong and is listed), overall and per question "
            "type. Captioning: BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap, PTB tokenisation, whole "
            "split in one call; SPICE unavailable offline). Retrieval: R@1/5/10, median and mean rank, both "
            "directions. Writes predictions.jsonl (as produced, resumable) and metrics.json to --out. "
            "Run under `torchrun --nproc_per_node N` to shard over processes."
        ),
    )
    p.add_argument("task", choices=TASK_NAMES, help="benchmark to evaluate")
    p.add_argument("--data-root", metavar="DIR", help="folder holding the dataset's annotations and videos "
                   "(searched a few levels deep; layouts in datasets/*/README.md)")
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint directory (config.json + model.safetensors "
                   "+ tokenizer), as written by model.save_pretrained or `mammut-video convert`")
    p.add_argument("--split", default="test", help="split to evaluate: train, val or test (default: test)")
    p.add_argument("--annotations", metavar="PATH", help="annotation file or folder (overrides the search under --data-root)")
    p.add_argument("--videos", metavar="DIR", help="video folder (overrides the search under --data-root)")
    p.add_argument("--frames", type=int, metavar="N", help="frames per clip (default: the checkpoint's num_frames)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="clips decoded and encoded per batch (default: 8)")
    p.add_argument("--question-batch", type=int, default=64, metavar="Q",
                   help="QA: questions decoded together; also the candidate chunk of --protocol rank (default: 64)")
    p.add_argument("--workers", type=int, default=4, metavar="W", help="video decoding processes (default: 4; 0: in the main process)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N items (questions or videos) of the split")
    p.add_argument("--out", metavar="DIR", help="output folder for predictions.jsonl and metrics.json (default: eval/TASK-SPLIT)")
    p.add_argument("--protocol", choices=("generate", "rank"), default="generate",
                   help="QA: 'generate' an open-ended answer (default) or 'rank' the candidate answers by decoder likelihood")
    p.add_argument("--answer-list", metavar="FILE", help="--protocol rank: candidate answers, one per line or a JSON list "
                   "(default: every answer of the training split)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue an interrupted evaluation in --out, skipping finished items")
    group.add_argument("--overwrite", action="store_true", help="discard earlier predictions in --out and start again")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available); under torchrun each rank uses cuda:LOCAL_RANK")
    p.add_argument("--no-meteor", action="store_true", help="captioning: skip METEOR (its Java start-up takes ~10 s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mammut_video.checkpoint.files import CheckpointError
    from mammut_video.data import AnnotationError, DatasetNotFoundError
    from mammut_video.eval.command import EvalError, evaluate
    from mammut_video.eval.predictions import PredictionFileError

    try:
        return evaluate(args)
    except (EvalError, DatasetNotFoundError, AnnotationError, PredictionFileError, CheckpointError) as err:
        print(f"mammut-video eval: error: {err}", file=sys.stderr)
        return 2
