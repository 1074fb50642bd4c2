"""``mammut-video ask VIDEO "question" ...``: answers about one clip, free or ranked among candidates."""

from __future__ import annotations

import argparse
import json

from mammut_video.commands.args import add_checkpoint, add_inference_runtime, add_verbosity, positive_int, wrap
from mammut_video.commands.caption import add_generation, add_segment

RESUMABLE = False
ASK_MAX_NEW_TOKENS = 10  # answers are short


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ask", help="ask questions about a video: free answers, or candidates ranked by likelihood",
        description=wrap(
            "Answer one or more questions about one video. The clip is decoded and encoded once for all of "
            "them. Without --candidates the answer is generated after the QA prompt "
            "(`question: ... answer:`); with --candidates every candidate is scored by the decoder's "
            "log-likelihood and the best ones are listed with their probability among the candidates."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", metavar="VIDEO", help="the video file (mp4, avi, mkv, webm, ...)")
    p.add_argument("questions", nargs="+", metavar="QUESTION", help="one or more questions (quote each)")
    model = p.add_argument_group("model")
    add_checkpoint(model)
    add_inference_runtime(model)
    gen = p.add_argument_group("answers")
    gen.add_argument("--candidates", metavar="FILE",
                     help="rank these answers instead of generating: a .json list of strings or one answer per "
                          "line (default: generate a free answer)")
    gen.add_argument("--top-k", type=positive_int, metavar="K",
                     help="with --candidates: how many of the best candidates to list (default: 5)")
    add_generation(gen, ASK_MAX_NEW_TOKENS)
    p.set_defaults(beams=None, max_new_tokens=None)  # None: not given, so that --candidates can refuse them
    add_segment(gen)
    p.add_argument("--json", action="store_true",
                   help='print one JSON object per question: {"question", "answer"} and, with --candidates, '
                        '"ranked": [[answer, log-likelihood, probability], ...] (default: readable text)')
    add_verbosity(p)
    p.set_defaults(run=run_ask)


def run_ask(args: argparse.Namespace) -> int:
    from mammut_video.errors import ConfigError
    from mammut_video.inference.ask import AskConfig, ask

    if args.candidates is None and args.top_k is not None:
        raise ConfigError("--top-k lists the best of ranked candidates: give them with --candidates FILE")
    if args.candidates is not None and (args.beams is not None or args.max_new_tokens is not None):
        raise ConfigError("--beams and --max-new-tokens shape generated answers; --candidates ranks given ones "
                          "instead: drop one or the other")
    config = AskConfig(args.video, args.questions, args.checkpoint, candidates=args.candidates, frames=args.frames,
                       start=args.start, end=args.end, num_beams=args.beams or 1,
                       max_new_tokens=args.max_new_tokens or ASK_MAX_NEW_TOKENS,
                       top_k=args.top_k or 5, device=args.device, precision=args.precision,
                       compile=args.compile)
    for a in ask(config):
        if args.json:
            out = {"question": a.question, "answer": a.answer}
            if a.ranked:
                out["ranked"] = [[c, round(lp, 4), round(p, 4)] for c, lp, p in a.ranked]
            print(json.dumps(out, ensure_ascii=False))
            continue
        print(f"Q: {a.question}\nA: {a.answer}")
        for c, lp, p in a.ranked:
            print(f"   {p:6.1%}  {c}  (log-likelihood {lp:.2f})")
    return 0
