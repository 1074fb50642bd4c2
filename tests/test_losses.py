"""Losses against direct computations on small examples, and across 2 gloo processes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mammut_video.model.losses import MammutLoss, caption_loss, clip_loss, focal_contrastive_loss, pair_logits


def _embeddings(b: int = 4, e: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, e, generator=g, dtype=torch.float64), torch.randn(b, e, generator=g, dtype=torch.float64)


def _cosines(v: torch.Tensor, t: torch.Tensor) -> list[list[float]]:
    return [[float(v[i] @ t[j] / (v[i].norm() * t[j].norm())) for j in range(len(t))] for i in range(len(v))]


def _direct_clip(v: torch.Tensor, t: torch.Tensor, scale: float) -> float:
    s = [[scale * c for c in row] for row in _cosines(v, t)]
    n = len(s)
    v2t = sum(-s[i][i] + math.log(sum(math.exp(s[i][j]) for j in range(n))) for i in range(n)) / n
    t2v = sum(-s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(n))) for j in range(n)) / n
    return (v2t + t2v) / 2


def _direct_focal(v: torch.Tensor, t: torch.Tensor, scale: float, bias: float, gamma: float, alpha: float | None) -> float:
    n = len(v)
    total = 0.0
    for i, row in enumerate(_cosines(v, t)):
        for j, c in enumerate(row):
            p = 1 / (1 + math.exp(-(scale * c + bias)))
            p_true = p if i == j else 1 - p
            w = 1.0 if alpha is None else (alpha if i == j else 1 - alpha)
            total += -w * (1 - p_true) ** gamma * math.log(p_true)
    return total / n


def test_clip_loss_matches_direct_computation() -> None:
    v, t = _embeddings()
    # logit_scale is the inverse temperature itself (open_clip's convention), not its log
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)
    assert clip_loss(v, t, scale).item() == pytest.approx(_direct_clip(v, t, 1 / 0.07), rel=1e-9)
    # scale clamped to 100 like CLIP
    big = torch.tensor(1000.0, dtype=torch.float64)
    assert clip_loss(v, t, big).item() == pytest.approx(_direct_clip(v, t, 100.0), rel=1e-9)
    # embeddings are L2-normalised inside
    assert clip_loss(3 * v, 0.5 * t, scale).item() == pytest.approx(clip_loss(v, t, scale).item(), rel=1e-9)


def test_clip_loss_gradient_reaches_inputs_and_scale() -> None:
    v, t = _embeddings()
    v.requires_grad_(True)
    log_scale = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    clip_loss(v, t, log_scale.exp()).backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert log_scale.grad is not None and log_scale.grad != 0


@pytest.mark.parametrize("gamma,alpha,bias", [(2.0, None, 0.0), (2.0, 0.25, -3.0), (0.5, None, 1.0)])
def test_focal_contrastive_matches_direct_computation(gamma: float, alpha: float | None, bias: float) -> None:
    v, t = _embeddings(b=5, seed=1)
    ours = focal_contrastive_loss(v, t, 5.0, logit_bias=bias, gamma=gamma, alpha=alpha)
    assert ours.item() == pytest.approx(_direct_focal(v, t, 5.0, bias, gamma, alpha), rel=1e-9)


def test_focal_with_gamma_zero_is_pairwise_sigmoid_loss() -> None:
    v, t = _embeddings(b=6, seed=2)
    logits = pair_logits(v, t, 8.0, -2.0)
    expected = F.binary_cross_entropy_with_logits(logits, torch.eye(6, dtype=logits.dtype), reduction="sum") / 6
    assert focal_contrastive_loss(v, t, 8.0, -2.0, gamma=0.0).item() == pytest.approx(expected.item(), rel=1e-12)


def test_focal_contrastive_is_finite_on_saturated_logits() -> None:
    v = torch.eye(4, 8, requires_grad=True)
    # logits +50 on the diagonal, -50 off it
    loss = focal_contrastive_loss(v, torch.eye(4, 8), torch.tensor(100.0), logit_bias=-50.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(v.grad).all()
    assert loss.item() < 1e-6  # perfectly separated pairs
    wrong = focal_contrastive_loss(v, torch.eye(4, 8).flip(0), torch.tensor(100.0), logit_bias=-50.0)
    assert torch.isfinite(wrong) and wrong.item() > 10


def test_caption_loss_matches_direct_computation() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([[-100, -100, 3, 6, -100], [-100, 1, 2, -100, -100]])
    terms = []
    for b in range(2):
        for i in range(1, 5):
            if labels[b, i] != -100:
                logp = logits[b, i - 1] - torch.logsumexp(logits[b, i - 1], dim=0)
                terms.append(-float(logp[labels[b, i]]))
    assert caption_loss(logits, labels).item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)


def test_caption_loss_only_sees_labelled_positions() -> None:
    from mammut_video.text.prompts import build_qa_batch
    from mammut_video.text.tokenizer import Tokenizer

    class Chars(Tokenizer):  # a tiny tokenizer: one id per letter, no files
        vocab_size, context_length, pad_id, sot_id, eot_id = 30, 24, 0, 1, 2

        def encode(self, text: str) -> list[int]:
            return [3 + ord(c) - ord("a") for c in text if c.isalpha()]

        def _decode_ids(self, ids: list[int]) -> str:
            return "".join(chr(ord("a") + i - 3) for i in ids)

        def save(self, directory):  # pragma: no cover - not used
            return {}

    tok = Chars()
    input_ids, labels = build_qa_batch(tok, ["who"], ["dog"], answer_reserve=6)
    # logits that put all mass on the true next token: zero loss
    logits = torch.full((1, 24, 30), -1e4)
    logits[0, :-1].scatter_(1, input_ids[0, 1:, None], 1e4)
    assert caption_loss(logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    # scrambling the predictions for question and padding positions changes nothing
    supervised_from = labels[0].ne(-100).nonzero()[:, 0] - 1  # positions whose logits are scored
    scrambled = torch.randn_like(logits)
    scrambled[0, supervised_from] = logits[0, supervised_from]
    assert caption_loss(scrambled, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_caption_loss_with_no_supervised_token_is_zero() -> None:
    logits = torch.randn(2, 4, 5, requires_grad=True)
    loss = caption_loss(logits, torch.full((2, 4), -100))
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None
    with pytest.raises(ValueError, match=r"\(B, L, V\)"):
        caption_loss(torch.randn(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))


def test_caption_loss_on_selected_positions_equals_the_full_layout() -> None:
    from mammut_video.model.losses import next_token_targets

    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 6, 11, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 6), generator=g)
    labels[:, :2] = -100
    labels[1, 4:] = -100
    where, targets = next_token_targets(labels)
    assert targets.shape == (3 * 4 - 2,)
    full = caption_loss(logits, labels)
    assert caption_loss(logits[where], targets).item() == pytest.approx(full.item(), rel=1e-12)
    assert caption_loss(logits[where], targets, reduction="sum").item() == pytest.approx(full.item() * 10, rel=1e-12)


@pytest.mark.parametrize("kind", ["softmax", "focal"])
def test_mammut_loss_combines_parts(kind: str) -> None:
    v, t = _embeddings()
    logits = torch.randn(4, 6, 9, dtype=torch.float64)
    labels = torch.randint(0, 9, (4, 6))
    labels[:, 0] = -100
    out = MammutLoss(contrastive=kind)(v, t, 10.0, logits, labels)
    contrastive = clip_loss(v, t, 10.0) if kind == "softmax" else focal_contrastive_loss(v, t, 10.0)
    assert out["contrastive_loss"].item() == pytest.approx(contrastive.item())
    assert out["caption_loss"].item() == pytest.approx(caption_loss(logits, labels).item())
    assert out["loss"].item() == pytest.approx(2.0 * out["caption_loss"].item() + 1.0 * out["contrastive_loss"].item())


def test_mammut_loss_skips_zero_weight_parts() -> None:
    logits = torch.randn(2, 5, 9)
    labels = torch.randint(0, 9, (2, 5))
    out = MammutLoss(contrastive_weight=0.0)(None, None, None, logits, labels)
    assert set(out) == {"caption_loss", "loss"}
    assert out["loss"].item() == pytest.approx(2.0 * caption_loss(logits, labels).item())
    with pytest.raises(ValueError, match="softmax"):
        MammutLoss(contrastive="sigmoid")
    with pytest.raises(ValueError, match="needs video_emb"):
        MammutLoss()(None, None, None, logits, labels)


_SHARDS = (slice(0, 2), slice(2, 6))  # unequal: a failed clip can leave one rank's batch short


def _distributed_worker(rank: int, world: int, init_file: str, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        v, t = _embeddings(b=6, seed=4)
        shard = _SHARDS[rank]
        for fn in (clip_loss, focal_contrastive_loss):
            v_local, t_local = v[shard].clone().requires_grad_(True), t[shard].clone().requires_grad_(True)
            loss = fn(v_local, t_local, 10.0)
            loss.backward()
            # plain lists: shared-memory tensors would not outlive this process
            queue.put((fn.__name__, rank, loss.item(), v_local.grad.tolist(), t_local.grad.tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_contrastive_losses_gather_across_processes(tmp_path) -> None:
    """2 ranks with 2 and 4 pairs give the 6-pair loss, and each rank the exact gradient of its rows."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").Queue()
    mp.start_processes(_distributed_worker, args=(2, str(tmp_path / "init"), queue), nprocs=2, start_method="spawn")
    results = [queue.get(timeout=60) for _ in range(4)]
    assert sorted((name, rank) for name, rank, *_ in results) == [
        ("clip_loss", 0), ("clip_loss", 1), ("focal_contrastive_loss", 0), ("focal_contrastive_loss", 1),
    ]
    for name, rank, loss, v_grad, t_grad in results:
        fn = clip_loss if name == "clip_loss" else focal_contrastive_loss
        v, t = _embeddings(b=6, seed=4)
        v.requires_grad_(True)
        t.requires_grad_(True)
        full = fn(v, t, 10.0)
        full.backward()
        rows = _SHARDS[rank]
        assert loss == pytest.approx(full.item(), rel=1e-9), name
        torch.testing.assert_close(torch.tensor(v_grad, dtype=torch.float64), v.grad[rows])
        torch.testing.assert_close(torch.tensor(t_grad, dtype=torch.float64), t.grad[rows])
