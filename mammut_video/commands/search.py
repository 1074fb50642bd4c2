"""``mammut-video search OUT "text"`` / ``--video FILE``: the nearest videos (or moments) in an embedding folder."""

from __future__ import annotations

import argparse

from mammut_video.commands.args import add_checkpoint, add_verbosity, device_name, positive_int, wrap

RESUMABLE = False

_DESCRIPTION = wrap(
    "Search the embeddings `mammut-video embed` wrote to OUT: `mammut-video search OUT \"a man is cooking\"` "
    "(text to video, through the model's contrastive text pass) or `mammut-video search OUT --video QUERY.mp4` "
    "(video to video). Queries are encoded by the model recorded in OUT/settings.json, so queries and videos "
    "come from the same model. Prints rank, cosine score, path and window, best first.",
    "The shards are read memory-mapped, 16,384 rows at a time, keeping the best K so far: memory stays "
    "bounded for any number of rows.",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search", help="search an embedding folder with a text or a video; print or page the best matches",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", metavar="OUT", help="the folder `mammut-video embed --out` wrote")
    p.add_argument("query", metavar="QUERY", nargs="?",
                   help="the text to search for (default: none; give it or --video)")
    p.add_argument("--video", metavar="FILE",
                   help="search with this video instead of a text: frames sampled over the whole file as the "
                        "index's were (default: none)")
    p.add_argument("-k", "--top-k", type=positive_int, default=10, metavar="K",
                   help="how many results, K >= 1 (default: 10)")
    model = p.add_argument_group("model")
    add_checkpoint(model, required_note="default: the checkpoint recorded in OUT/settings.json")
    model.add_argument("--force", action="store_true",
                       help="search with --checkpoint although it is not the model that made the embeddings (its "
                            "width must still match), or with the recorded checkpoint although its files changed "
                            "(default: refused)")
    model.add_argument("--device", type=device_name, default="cpu", metavar="DEV",
                       help="where the query is encoded: cpu, cuda or cuda:N (default: cpu; one query is fast there)")
    out = p.add_argument_group("results")
    out.add_argument("--json", action="store_true",
                     help="print one JSON object per result (rank, score and the index row: path, start, end, "
                          "window, shard, row, ...) instead of a table (default: table)")
    out.add_argument("--html", metavar="FILE",
                     help="also write a self-contained page (images inline, no network) showing each result as a "
                          "strip of frames from its window (default: none)")
    out.add_argument("--html-frames", type=positive_int, default=8, metavar="N",
                     help="frames per result on the --html page (default: 8)")
    add_verbosity(p)
    p.set_defaults(run=run_search)


def _table(hits: list) -> str:
    width = max((len(h.path) for h in hits), default=4)
    lines = [f"{'rank':>4}  {'score':>7}  {'path'.ljust(width)}  window"]
    lines += [f"{h.rank:>4}  {h.score:7.4f}  {h.path.ljust(width)}  {h.span()}" for h in hits]
    return "\n".join(lines)


def run_search(args: argparse.Namespace) -> int:
    import json
    import logging

    from mammut_video.embed.index import EmbeddingIndex
    from mammut_video.errors import ConfigError

    if (args.query is None) == (args.video is None):
        raise ConfigError("give a text QUERY or --video FILE (one of them)")
    index = EmbeddingIndex(args.out, checkpoint=args.checkpoint, force=args.force, device=args.device)
    hits = index.search(args.query, args.top_k) if args.video is None else index.search_video(args.video, args.top_k)
    if args.json:
        print("\n".join(json.dumps(h.to_json(), ensure_ascii=False) for h in hits))
    else:
        print(_table(hits))
    if args.html:
        from mammut_video.embed.html import write_results_html

        title = args.query if args.video is None else f"videos like {args.video}"
        path = write_results_html(args.html, title, hits, index, frames=args.html_frames, query_video=args.video)
        logging.getLogger("mammut_video.commands.search").info("page: %s", path)
    return 0
