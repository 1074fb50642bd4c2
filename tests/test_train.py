"""The trainer's parts without a run: config and recipes, SPECs, optimizer groups, schedule, batches."""

from __future__ import annotations

import math

import pytest
import torch

import mammut_video as mv
from mammut_video.commands import main
from mammut_video.errors import ConfigError
from mammut_video.train.config import FINETUNE, SCRATCH, FinetuneConfig, parse_duration
from mammut_video.train.data import parse_spec, text_batch, trim_to_longest
from mammut_video.train.loop import Geometry, TrainError
from mammut_video.train.optim import WarmupCosine, build_optimizer, no_weight_decay


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from mammut_video.data import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("train"), kind="custom", num_videos=4, frames=8, size=32)["custom"]


@pytest.mark.parametrize("text,seconds", [(600, 600), ("600", 600), ("45s", 45), ("10m", 600), ("1h30m", 5400),
                                          ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10q", "m", "-5", "0s"])
def test_bad_durations(text):
    with pytest.raises(ConfigError, match="max_time"):
        parse_duration(text)


def test_defaults_follow_the_starting_point(tmp_path):
    scratch = FinetuneConfig(train="t.jsonl", out=tmp_path, preset="mammut-video-tiny")
    tuned = FinetuneConfig(train="t.jsonl", out=tmp_path, checkpoint="ckpt/")
    assert scratch.resolved("lr") == SCRATCH.lr > tuned.resolved("lr") == FINETUNE.lr
    assert scratch.resolved("tokenizer") == "sentencepiece" and tuned.resolved("tokenizer") is None
    assert FinetuneConfig(train="t", out=tmp_path, preset="p", lr=3e-4).resolved("lr") == 3e-4
    # the run length: epochs by default, else steps or the time budget (which then drives the schedule)
    assert scratch.resolved("epochs") == SCRATCH.epochs and not scratch.time_schedule
    timed = FinetuneConfig(train="t", out=tmp_path, preset="p", max_time="10m")
    assert timed.resolved("epochs") is None and timed.time_schedule and timed.settings()["max_time"] == 600
    assert "max_time" not in FinetuneConfig(train="t", out=tmp_path, preset="p", steps=5, max_time=60).settings()


@pytest.mark.parametrize("kwargs,match", [
    ({}, "one starting point"), ({"preset": "p", "checkpoint": "c"}, "one starting point"),
    ({"preset": "p", "steps": 5, "epochs": 2}, "not both"), ({"preset": "p", "task": "vqa"}, "qa or caption"),
    ({"preset": "p", "freeze": "wings"}, "freeze wings"), ({"preset": "p", "lr": 0}, "lr must be > 0"),
    ({"checkpoint": "c", "tokenizer": "sentencepiece"}, "keeps its own tokenizer"),
    ({"preset": "p", "precision": "fp8"}, "precision"), ({"preset": "p", "crop_scale": 0}, "crop_scale"),
])
def test_bad_configs_are_one_line_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        FinetuneConfig(train="t.jsonl", out=tmp_path, **kwargs)
    assert "\n" not in str(err.value)


def test_specs(synth, tmp_path):
    custom = parse_spec(str(synth / "train.jsonl"), "train")
    assert custom.benchmark is None and custom.path == synth / "train.jsonl"
    bench = parse_spec(f"msrvtt-qa:{tmp_path}:test", "train")
    assert (bench.benchmark, bench.path, bench.split) == ("msrvtt-qa", tmp_path, "test")
    assert parse_spec(f"msvd-caption:{tmp_path}", "val").split == "val"
    for text, match in [(str(tmp_path / "nope.jsonl"), "no such file"), (str(tmp_path), "is a folder"),
                        ("msrvtt-qa:", "no data root"), (f"msvd-qa:{tmp_path}/none", "not a folder")]:
        with pytest.raises(ConfigError, match=match):
            parse_spec(text, "train", "--train")


def test_an_empty_annotation_file_is_said_to_hold_no_records(tmp_path, capsys):
    empty = tmp_path / "train.jsonl"
    empty.write_text("\n\n")
    assert main(["finetune", "--train", str(empty), "--out", str(tmp_path / "o"), "--preset", "mammut-video-tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{empty}: holds no records" in err and "cannot tell" not in err and len(err.splitlines()) == 1


def test_bad_options_on_the_command_line_are_one_line(synth, tmp_path, capsys):
    base = ["finetune", "--train", str(synth / "train.jsonl"), "--out", str(tmp_path / "o")]
    assert main(base + ["--preset", "mammut-video-tiny", "--batch-size", "6", "--grad-accum", "4"]) == 2
    err = capsys.readouterr().err
    assert "choose a multiple of 4" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # refused before anything was written
    assert main(base + ["--checkpoint", str(tmp_path / "none")]) == 2
    assert "none not found" in capsys.readouterr().err
    assert main(["finetune", "--train", f"msrvtt-qa:{tmp_path}", "--out", str(tmp_path / "o"), "--preset",
                 "mammut-video-tiny"]) == 2
    assert "msrvtt-qa" in capsys.readouterr().err
    for bad in (["--max-time", "soon"], ["--freeze", "head"], ["--preset", "p", "--checkpoint", "c"]):
        with pytest.raises(SystemExit) as exit_:
            main(base + (["--preset", "mammut-video-tiny"] if "--preset" not in bad else []) + bad)
        assert exit_.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_geometry_splits_the_global_batch():
    g = Geometry(batch_size=12, world=2, accum=3, samples=50)
    assert (g.per_rank, g.micro, g.steps_per_epoch) == (6, 2, 4)
    with pytest.raises(ConfigError, match="multiple of 4"):
        Geometry(batch_size=6, world=2, accum=2, samples=50)
    with pytest.raises(TrainError, match="fewer than one batch"):
        _ = Geometry(batch_size=64, world=1, accum=1, samples=50).steps_per_epoch


def test_no_weight_decay_on_norms_biases_positions_and_scale():
    model = mv.create_model("mammut-video-tiny")
    skip = no_weight_decay(model)
    for name in ("visual.trunk.pos_embed", "visual.trunk.cls_token", "visual.time_embed", "text.positional_embedding",
                 "logit_scale", "visual.tubes.motion.bias", "text.ln_final.weight", "visual.trunk.norm.bias"):
        assert name in skip, name
    for name in ("visual.tubes.motion.weight", "text.lm_head", "text.token_embedding.weight", "map_viz2txt_kv"):
        assert name not in skip, name
    model.lock(text=True)
    opt = build_optimizer(model, 1e-3, 0.1)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) not in trained for p in model.text.parameters())
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_warmup_then_cosine():
    f = WarmupCosine(warmup=4, total=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(8) == pytest.approx(0.5) and f(12) == pytest.approx(0.0)
    timed = WarmupCosine(warmup=2, total=None)
    timed.time_fraction = 0.5
    assert timed(10) == pytest.approx(0.5) and timed(0) == 0.5


def test_text_batches_are_padded_to_their_longest_row():
    tok = mv.create_model("mammut-video-tiny").tokenizer
    from mammut_video.data.records import QARecord

    qa = [QARecord("a.mp4", "what color is the circle?", "red", 1, "what"), QARecord("a.mp4", "how many?", "two", 2, "how"),
          QARecord("b.mp4", "where?", "left", 3, "where")]
    items = [{"samples": qa[:2]}, {"samples": qa[2:]}]
    ids, labels, rows = text_batch(tok, items, "qa", 32)
    assert rows == [2, 1]
    full, full_labels = mv.build_qa_batch(tok, [s.question for s in qa], [s.answer for s in qa], 32)
    assert ids.shape[1] < 32 and torch.equal(ids, full[:, : ids.shape[1]])
    assert full_labels[:, ids.shape[1]:].eq(-100).all()  # nothing supervised was cut
    assert labels[0, ids.shape[1] - 1] == tok.eot_id
    ids, labels = trim_to_longest(torch.ones(2, 6, dtype=torch.long), torch.full((2, 6), -100))
    assert ids.shape == (2, 1)


def test_finetune_is_exported():
    assert mv.finetune.__module__ == "mammut_video.train.run" and mv.FinetuneConfig is FinetuneConfig
    assert math.isfinite(SCRATCH.lr)


def test_the_run_vocabulary_keeps_answer_words_one_token(tmp_path) -> None:
    # SentencePiece's default unigram model stopped at 62 pieces on the synthetic QA texts and spelled
    # "left" in 4 of them; answers of several pieces make every answer a multi-step generation.
    from mammut_video.data import make_synthetic
    from mammut_video.train.data import corpus, load_split, parse_spec, samples_of
    from mammut_video.train.run import train_vocabulary

    data = make_synthetic(tmp_path, kind="custom", num_videos=20, frames=4, size=32, seed=0)["custom"]
    samples = samples_of(load_split(parse_spec(str(data / "train.jsonl"), "train"), "qa", None), "qa")
    tok = train_vocabulary(corpus(samples, "qa"), tmp_path / "tok", 1000, 32)
    answers = {s.answer for s in samples}
    assert {"circle", "square", "triangle"} <= answers and answers & {"left", "right", "up", "down"}
    for answer in answers:
        assert len(tok.encode(" " + answer)) == 1, (answer, tok.encode(" " + answer))


def test_qa_trains_by_clip_with_all_its_questions_captions_one_by_one():
    from mammut_video.data.records import QARecord
    from mammut_video.train.data import CaptionSample, clip_groups

    qa = [QARecord("a.mp4", "q1", "x", 1, "other"), QARecord("b.mp4", "q2", "y", 2, "other"),
          QARecord("a.mp4", "q3", "z", 3, "other"), QARecord("a.mp4", "q4", "w", 4, "other", start=1.0, end=2.0)]
    groups = clip_groups(qa, "qa")
    assert [(str(g.video), g.start, [s.question for s in g.samples]) for g in groups] == [
        ("a.mp4", None, ["q1", "q3"]), ("b.mp4", None, ["q2"]), ("a.mp4", 1.0, ["q4"])]
    captions = [CaptionSample("a.mp4", "a", "one"), CaptionSample("a.mp4", "a", "two")]
    assert [len(g.samples) for g in clip_groups(captions, "caption")] == [1, 1]


def test_epoch_end_validation_happens_about_ten_times_a_run_not_every_small_epoch():
    from types import SimpleNamespace

    from mammut_video.train.loop import Trainer

    def checks(total_steps, max_time, epoch_steps, seconds_per_step, steps):
        t = SimpleNamespace(position=SimpleNamespace(step=0, elapsed=0.0), last_check=(0, 0.0), total_steps=total_steps,
                            config=SimpleNamespace(max_time=max_time))
        done = 0
        for step in range(epoch_steps, steps + 1, epoch_steps):
            t.position.step, t.position.elapsed = step, step * seconds_per_step
            done += Trainer._epoch_check_due(t)
        return done

    # a 10-minute run whose epochs take 12 s: 50 epochs, validated every minute, not 50 times
    assert checks(None, 600.0, 18, 0.67, 18 * 50) == 10
    # bounded by steps: 1000 steps of 2-step epochs -> every 100 steps
    assert checks(1000, None, 2, 1.0, 1000) == 10
    # few long epochs: every epoch
    assert checks(50, None, 10, 1.0, 50) == 5


def test_each_step_says_how_long_it_waited_for_its_clips(monkeypatch):
    """The seconds a step waited for the loader (its workers starting, clips not decoded ahead) travel
    with its micro-batches into the record (``data_s``), apart from the step's own time (``step_s``)."""
    import time
    from types import SimpleNamespace

    from mammut_video.train import loop
    from mammut_video.train.loop import Trainer

    class SlowLoader:
        def __init__(self, dataset, order, micro, workers):
            self.order, self.micro = order, micro

        def __iter__(self):
            time.sleep(0.05)  # the workers start (a DataLoader starts them in iter())
            return self.batches()

        def batches(self):
            for i in range(0, len(self.order), self.micro):
                time.sleep(0.05 if i // self.micro == 2 else 0.0)  # the third micro-batch is slow to decode
                yield self.order[i: i + self.micro]

    monkeypatch.setattr(loop, "epoch_order", lambda data, epoch, seed, rank, world: list(range(12)))
    monkeypatch.setattr(loop, "epoch_loader", SlowLoader)
    t = SimpleNamespace(geometry=SimpleNamespace(steps_per_epoch=3, per_rank=4, micro=2, accum=2, world=1),
                        position=SimpleNamespace(epoch=0, epoch_step=0),
                        train_data=SimpleNamespace(set_epoch=lambda epoch: None),
                        config=SimpleNamespace(seed=0, workers=0), ctx=SimpleNamespace(rank=0))
    steps = []
    for step in Trainer._epoch_batches(t):
        steps.append(step)
        time.sleep(0.05)  # the step itself (and any validation) is not waiting for data
    assert [batches for batches, _ in steps] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]], [[8, 9], [10, 11]]]
    waits = [waited for _, waited in steps]
    assert waits[0] >= 0.05 and waits[1] >= 0.05 and waits[2] < 0.05


def test_checkpoints_say_whether_the_text_embedding_ever_trained():
    """Trained by this run's contrastive pass, else what the start says: never from a preset or a
    decoder imported fresh, inherited from a fine-tuned start, unknown for older checkpoints."""
    from types import SimpleNamespace

    from mammut_video.train.loop import Trainer

    def trained(weight: float, preset: str | None, start: dict) -> bool | None:
        t = SimpleNamespace(config=SimpleNamespace(contrastive_weight=weight, preset=preset))
        return Trainer._text_embedding_trained(t, start)

    tuned = {"source": "mammut-video", "finetune": {"step": 3}}
    assert trained(1.0, "mammut-video-tiny", {}) is True
    assert trained(0.0, "mammut-video-tiny", {}) is False
    assert trained(0.0, None, {"source": "timm", "fresh": ["text decoder"]}) is False
    assert trained(0.0, None, {"source": "openmammut", "fresh": []}) is True
    assert trained(0.0, None, {**tuned, "finetune": {"text_embedding_trained": False}}) is False
    assert trained(0.0, None, {**tuned, "finetune": {"text_embedding_trained": True}}) is True
    assert trained(0.0, None, tuned) is None


def test_curves_skip_the_steps_whose_clips_all_failed(tmp_path) -> None:
    from mammut_video.train.curves import draw_curves

    records = [{"kind": "train", "step": 1, "loss": 2.0}, {"kind": "train", "step": 2, "skipped": "every clip failed"},
               {"kind": "train", "step": 3, "loss": 1.5}, {"kind": "val", "step": 3, "val_loss": 1.7, "val_accuracy": 10.0}]
    draw_curves(records, tmp_path / "curves.png", "val_accuracy")  # a KeyError on 'loss' ended such runs
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
