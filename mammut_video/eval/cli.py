"""The ``eval`` sub-command (argument parsing only; the work is in ``mammut_video.eval.command``).

``mammut-video eval TASK [options]``: every task has its own parser, so ``--help`` lists only
the options that apply to it, each explained with its default.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from mammut_video.argtypes import device_name, non_negative_int, positive_int

TASK_NAMES = ("msrvtt-qa", "msvd-qa", "msrvtt-caption", "msvd-caption", "msrvtt-retrieval")

_DATA = {
    "msrvtt-qa": ("MSRVTT-QA", "datasets/msrvtt/README.md",
                  "{split}_qa.json (original), qa_{split}.json (LAVIS), msrvtt_qa_{split}.json (VindLU/UMT), "
                  "{split}.jsonl (ALPRO), txt_msrvtt-qa.json (VIOLET)"),
    "msvd-qa": ("MSVD-QA", "datasets/msvd/README.md",
                "{split}_qa.json + youtube_mapping.txt (original), qa_{split}.json (LAVIS), msvd_qa_{split}.json "
                "(VindLU/UMT), {split}.jsonl (ALPRO), txt_msvd-qa.json (VIOLET)"),
    "msrvtt-caption": ("MSR-VTT captioning", "datasets/msrvtt/README.md",
                       "train_val_videodatainfo.json / test_videodatainfo.json, or videodatainfo_2017.json / "
                       "MSRVTT_data.json"),
    "msvd-caption": ("MSVD captioning", "datasets/msvd/README.md",
                     "AllVideoDescriptions.txt (+ youtube_mapping.txt)"),
    "msrvtt-retrieval": ("MSR-VTT 1k-A retrieval", "datasets/msrvtt/README.md", "MSRVTT_JSFUSION_test.csv"),
}

_SUMMARY = {
    "msrvtt-qa": "open-ended VideoQA accuracy on MSRVTT-QA",
    "msvd-qa": "open-ended VideoQA accuracy on MSVD-QA",
    "msrvtt-caption": "captioning metrics on MSR-VTT",
    "msvd-caption": "captioning metrics on MSVD",
    "msrvtt-retrieval": "text<->video retrieval on the MSR-VTT 1k-A test set",
}

_METRICS = {
    "qa": "Accuracy is exact match after VQA normalisation (case, punctuation, articles, number words) over "
          "ALL questions of the split, overall and per question type (what/who/how/when/where); a question "
          "whose clip cannot be read counts wrong and the clip is listed in metrics.json.",
    "caption": "One caption per video, scored with pycocoevalcap over the whole split in one call: BLEU-1..4, "
               "METEOR, ROUGE-L, CIDEr (CIDEr-D); PTB tokenisation first. Needs Java (checked before the "
               "run starts). SPICE is reported as unavailable (it needs models downloaded at first use).",
    "retrieval": "Contrastive video and caption embeddings; R@1/5/10, median and mean rank, text->video and "
                 "video->text. A video that cannot be read ranks last.",
}

_OUTPUT = ("Writes to --out: predictions.jsonl (one line per item, appended as it goes), settings.json (the "
           "checkpoint, data, frames and protocol that decide the predictions; --resume refuses to continue "
           "under other settings) and metrics.json (metrics, those settings with absolute paths, counts, "
           "failed videos). Run under `torchrun --nproc_per_node N -m mammut_video eval ...` to shard the "
           "items over N processes; the metrics equal a one-process run.")


class TaskParser(argparse.ArgumentParser):
    """A task's parser: a bad option is reported in one line (with where to find the help), exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _wrap(*paragraphs: str) -> str:
    return "\n\n".join(textwrap.fill(p, 88) for p in paragraphs)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on MSRVTT-QA, MSVD-QA, MSR-VTT/MSVD captioning or MSR-VTT 1k-A retrieval",
        description=_wrap(
            "Evaluate a checkpoint on a benchmark split: `mammut-video eval TASK --data-root DIR --checkpoint "
            "CKPT [options]`. Each task has its own options: `mammut-video eval TASK --help`.", _OUTPUT),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(title="tasks", metavar="TASK", dest="task", required=True, parser_class=TaskParser)
    for name in TASK_NAMES:
        _add_task(tasks, name)


def _add_task(tasks: argparse._SubParsersAction, name: str) -> None:
    from mammut_video.eval.command import TASKS

    kind = TASKS[name][0]
    title, readme, files = _DATA[name]
    item = "question" if kind == "qa" else "video"
    p = tasks.add_parser(
        name, help=_SUMMARY[name],
        description=_wrap(f"Evaluate a checkpoint on {title}: {_SUMMARY[name]}.", _METRICS[kind], _OUTPUT,
                          f"Data layouts and accepted annotation formats: {readme}."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--data-root", metavar="DIR",
                      help=f"folder holding the {title} annotations and videos, searched 4 levels deep for "
                           f"{files} and for the folder with the videos they name; layouts in {readme} "
                           "(default: none; give it or --annotations)")
    if kind == "qa":
        data.add_argument("--split", default="test", metavar="SPLIT",
                          help="split to evaluate: train, val (or validate) or test (default: test)")
    elif name == "msrvtt-caption":
        data.add_argument("--split", default="test", metavar="SPLIT",
                          help="split to evaluate: train (6,513 videos), validate (or val, 497) or test "
                               "(2,990) (default: test)")
    elif name == "msvd-caption":
        data.add_argument("--split", default="test", metavar="SPLIT",
                          help="split to evaluate: train (vid1-1200), val (vid1201-1300) or test "
                               "(vid1301-1970) (default: test)")
    else:
        p.set_defaults(split="test")  # 1k-A has one split: its 1,000 test videos
    data.add_argument("--annotations", metavar="PATH",
                      help="annotation file, or a folder to search for it, instead of searching --data-root "
                           "(default: found under --data-root)")
    data.add_argument("--videos", metavar="DIR",
                      help="folder holding the videos (searched recursively) instead of searching --data-root "
                           "(default: the folder under --data-root holding the videos the annotations name)")
    data.add_argument("--limit", type=positive_int, metavar="N",
                      help=f"evaluate only the first N {item}s of the split, N >= 1; metrics then cover those "
                           f"only (default: every {item})")

    model = p.add_argument_group("model")
    model.add_argument("--checkpoint", metavar="CKPT",
                       help="checkpoint directory (config.json + model.safetensors + tokenizer), as written by "
                            "model.save_pretrained or `mammut-video convert`; nothing is downloaded (required)")
    model.add_argument("--frames", type=positive_int, metavar="N",
                       help="frames sampled uniformly from each clip, N >= 1 (default: the checkpoint's "
                            "num_frames)")
    model.add_argument("--device", type=device_name, metavar="DEV",
                       help="cpu, cuda or cuda:N; under torchrun each process uses cuda:LOCAL_RANK (default: cuda "
                            "when available, else cpu)")

    if kind == "qa":
        qa = p.add_argument_group("question answering")
        qa.add_argument("--protocol", choices=("generate", "rank"), default="generate",
                        help="'generate': decode an open-ended answer greedily (up to 10 tokens); 'rank': score "
                             "every candidate answer by its decoder log-likelihood after the question and pick "
                             "the best (the clip is encoded once for all its questions and candidates) "
                             "(default: generate)")
        qa.add_argument("--answer-list", metavar="FILE",
                        help="--protocol rank: the candidate answers, a .json file holding a list of strings or "
                             "any other text file with one answer per line (default: every distinct answer of "
                             "the training split, found beside the evaluated split's annotation file)")
        qa.add_argument("--question-batch", type=positive_int, default=64, metavar="Q",
                        help="--protocol generate: questions decoded together (default: 64)")
        qa.add_argument("--rank-batch", type=positive_int, default=256, metavar="R",
                        help="--protocol rank: (question, candidate) pairs scored per decoder pass; lower it if "
                             "memory runs out (default: 256)")
    else:
        p.set_defaults(protocol=None, answer_list=None, question_batch=64, rank_batch=256)
    if kind == "caption":
        p.add_argument_group("captioning").add_argument(
            "--no-meteor", action="store_true",
            help="skip METEOR (its Java start-up takes ~10 s); the other metrics are unchanged (default: "
                 "METEOR computed)")
    else:
        p.set_defaults(no_meteor=False)

    run = p.add_argument_group("run")
    run.add_argument("--out", metavar="DIR",
                     help=f"output folder for predictions.jsonl, settings.json and metrics.json (default: "
                          f"eval/{name}-SPLIT)")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted evaluation in --out: finished items are kept, the rest (and "
                            "items whose clip failed to decode) are evaluated; refused when the checkpoint, data, "
                            "frames or protocol differ from the earlier run's (default: off; without it an --out "
                            "holding predictions is refused)")
    group.add_argument("--overwrite", action="store_true",
                       help="discard the predictions already in --out and start again (default: off)")
    run.add_argument("--batch-size", type=positive_int, default=8, metavar="B",
                     help="clips decoded and encoded per batch (default: 8)")
    run.add_argument("--workers", type=non_negative_int, default=4, metavar="W",
                     help="video decoding processes; 0 decodes in the main process (default: 4)")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (default: a bar with items/s and ETA on rank 0)")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from mammut_video.checkpoint.files import CheckpointError
    from mammut_video.data import AnnotationError, DatasetNotFoundError
    from mammut_video.eval.caption_metrics import CaptionMetricsError
    from mammut_video.eval.command import EvalError, evaluate
    from mammut_video.eval.distributed import MainRankError
    from mammut_video.eval.predictions import PredictionFileError

    try:
        return evaluate(args)
    except (EvalError, DatasetNotFoundError, AnnotationError, PredictionFileError, CheckpointError,
            CaptionMetricsError, MainRankError) as err:
        print(f"mammut-video eval: error: {err}", file=sys.stderr)
        return 2


run = run_command  # the name earlier versions set as ``func``
