"""``mammut-video eval TASK``: every task has its own parser, so ``--help`` lists only its options."""

from __future__ import annotations

import argparse

from mammut_video.commands.args import (
    CommandParser,
    add_batching,
    add_checkpoint,
    add_inference_runtime,
    add_run_dir,
    add_verbosity,
    positive_int,
    show_progress,
    wrap,
)
from mammut_video.eval.registry import TASKS, TaskInfo

RESUMABLE = True

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint on MSRVTT-QA, MSVD-QA, MSR-VTT/MSVD captioning, MSR-VTT 1k-A retrieval, or "
             "your own QA / caption set",
        description=wrap(
            "Evaluate a checkpoint on a benchmark split: `mammut-video eval TASK --data-root DIR --checkpoint "
            "CKPT [options]`. Each task has its own options: `mammut-video eval TASK --help`.", _OUTPUT),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tasks = p.add_subparsers(title="tasks", metavar="TASK", dest="task", required=True, parser_class=CommandParser)
    for info in TASKS.values():
        _add_task(tasks, info)


def _split_type(info: TaskInfo):
    def parse(text: str) -> str:
        from mammut_video.errors import ConfigError

        try:
            return info.check_split(text)
        except ConfigError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = "split"
    return parse


def _add_task(tasks: argparse._SubParsersAction, info: TaskInfo) -> None:
    p = tasks.add_parser(
        info.name, help=info.summary,
        description=wrap(f"Evaluate a checkpoint on {info.title}: {info.summary}.", _METRICS[info.kind], _OUTPUT,
                         f"Data layouts and accepted annotation formats: {info.readme}."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument("--data-root", metavar="DIR",
                      help=f"folder holding the annotations and videos of {info.title}, searched 4 levels deep for "
                           f"{info.files} and for the folder with the videos they name; layouts in {info.readme} "
                           "(default: none; give it or --annotations)")
    if len(info.splits) != 1:
        data.add_argument("--split", default="test", metavar="SPLIT", type=_split_type(info),
                          help=f"split to evaluate: {info.split_help.removeprefix('expected ')} (default: test)")
    else:
        p.set_defaults(split=info.splits[0])
    data.add_argument("--annotations", metavar="PATH",
                      help="annotation file, or a folder to search for it, instead of searching --data-root "
                           "(default: found under --data-root)")
    data.add_argument("--videos", metavar="DIR",
                      help="folder holding the videos (searched recursively) instead of searching --data-root "
                           "(default: the folder under --data-root holding the videos the annotations name)")
    data.add_argument("--limit", type=positive_int, metavar="N",
                      help=f"evaluate only the first N {info.item}s of the split, N >= 1; metrics then cover those "
                           f"only (with --resume, finished predictions beyond them are kept) (default: every "
                           f"{info.item})")

    model = p.add_argument_group("model")
    add_checkpoint(model)
    add_inference_runtime(model)

    if info.kind == "qa":
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
                        help="--protocol rank: (question, answer prefix) positions per decoder pass (candidates "
                             "sharing a prefix share its position); lower it if memory runs out (default: 256)")
    else:
        p.set_defaults(protocol=None, answer_list=None, question_batch=64, rank_batch=256)
    if info.kind == "caption":
        p.add_argument_group("captioning").add_argument(
            "--no-meteor", action="store_true",
            help="skip METEOR (its Java start-up takes ~10 s); the other metrics are unchanged (default: "
                 "METEOR computed)")
    else:
        p.set_defaults(no_meteor=False)

    run = p.add_argument_group("run")
    split_part = "-SPLIT" if len(info.splits) != 1 else f"-{info.splits[0]}"
    add_run_dir(run, "predictions.jsonl, settings.json and metrics.json", f"eval/{info.name}{split_part}",
                "continue an interrupted evaluation in --out: finished items are kept, the rest (and items whose "
                "clip failed to decode) are evaluated; refused when the checkpoint, data, frames or protocol "
                "differ from the earlier run's (default: off; without it an --out holding predictions is refused)")
    add_batching(run)
    add_verbosity(p)
    p.set_defaults(run=run_eval)


def config_from_args(args: argparse.Namespace):
    """The :class:`~mammut_video.eval.EvalConfig` the parsed options describe."""
    from mammut_video.eval.config import CaptionOptions, EvalConfig, QAOptions, RetrievalOptions

    kind = TASKS[args.task].kind
    if kind == "qa":
        options = QAOptions(args.protocol, args.answer_list, args.question_batch, args.rank_batch)
    elif kind == "caption":
        options = CaptionOptions(meteor=not args.no_meteor)
    else:
        options = RetrievalOptions()
    return EvalConfig(
        task=args.task, checkpoint=args.checkpoint, data_root=args.data_root, split=args.split,
        annotations=args.annotations, videos=args.videos, limit=args.limit, frames=args.frames,
        device=args.device, precision=args.precision, compile=args.compile, batch_size=args.batch_size,
        workers=args.workers, out=args.out, resume=args.resume, overwrite=args.overwrite,
        progress=show_progress(args), options=options)


def run_eval(args: argparse.Namespace) -> int:
    import sys

    from mammut_video.eval.run import evaluate

    result = evaluate(config_from_args(args))
    if result.metrics is None:  # a torchrun rank other than 0
        return 0
    print(result.table())
    print(f"predictions: {result.predictions_path}\nmetrics: {result.metrics_path}")
    if result.counts["items"] and result.counts["predicted"] == 0:
        print("mammut-video eval: error: no item could be evaluated (see failed_videos in metrics.json)",
              file=sys.stderr)
        return 1
    return 0
