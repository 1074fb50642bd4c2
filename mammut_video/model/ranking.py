"""Candidate answers scored by decoder likelihood, with the prefixes they share fed to the decoder once.

A candidate's score after a question prompt is the sum of ``log p(token | prompt, earlier tokens)``
over its tokens and the EOT that closes it. The candidates form a prefix tree
(:class:`AnswerTrie`): a node is a distinct proper prefix, the decoder is fed each node's last
token once per question, and every node attends to the question's cached prompt and to its own
ancestors only (a tree mask, :meth:`~mammut_video.model.decoder.TextDecoder.tree_states`), as if
its branch had been fed alone. The prompt's cache is read in place by every node (no copy per
candidate), and the nodes of several questions about one clip go through the decoder together,
the clip's cross-attention K/V read once for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mammut_video.model.decoder import KV, ClipKV, TextDecoder
from mammut_video.model.generation import left_pad


@dataclass
class TrieChunk:
    """Whole first-token subtrees of an :class:`AnswerTrie`, fed to the decoder in one pass.

    ``tokens``, ``depth`` (m,) of its nodes; ``tree`` (m, m) bool, node j is node i or its
    ancestor; edges leaving its nodes: ``edge_src`` (e,) the source node within the chunk,
    ``edge_token`` (e,) the token scored, ``edge_ids`` (e,) the edges' ids in the trie.
    """

    tokens: torch.Tensor
    depth: torch.Tensor
    tree: torch.Tensor
    edge_src: torch.Tensor
    edge_token: torch.Tensor
    edge_ids: torch.Tensor


class AnswerTrie:
    """Candidate answers (token ids, each closed by EOT) as a prefix tree.

    Nodes are the distinct non-empty proper prefixes (what the decoder must be fed), numbered in
    depth-first order so that a first-token subtree is a contiguous range. Edges are the distinct
    non-empty prefixes: edge e scores ``edge_token[e]`` after node ``edge_src[e]`` (-1: right after
    the prompt) at depth ``edge_depth[e]``; ``paths[k]`` lists candidate k's edges in order.
    """

    def __init__(self, answers: list[list[int]]) -> None:
        self._chunks: dict[tuple[int, torch.device], list[TrieChunk]] = {}
        self.node_token: list[int] = []
        self.node_depth: list[int] = []
        self.node_parent: list[int] = []
        self.edge_src: list[int] = []
        self.edge_token: list[int] = []
        self.edge_depth: list[int] = []
        self.paths: list[list[int]] = [[] for _ in answers]
        nodes: dict[tuple[int, ...], int] = {}
        edges: dict[tuple[int, ...], int] = {}
        for k in sorted(range(len(answers)), key=lambda k: answers[k]):  # sorted: subtrees contiguous
            seq, parent = answers[k], -1
            for d in range(1, len(seq) + 1):
                prefix = seq[:d]
                self.paths[k].append(self._add(edges, prefix, (self.edge_src, self.edge_token, self.edge_depth),
                                               (parent, seq[d - 1], d)))
                if d < len(seq):
                    parent = self._add(nodes, prefix, (self.node_parent, self.node_token, self.node_depth),
                                       (parent, seq[d - 1], d))

    @staticmethod
    def _add(index: dict, prefix: list[int], columns: tuple[list[int], ...], values: tuple[int, ...]) -> int:
        """The id of ``prefix`` in ``index``, appending ``values`` to ``columns`` when it is new."""
        key = tuple(prefix)
        if key not in index:
            index[key] = len(index)
            for column, value in zip(columns, values):
                column.append(value)
        return index[key]

    @property
    def num_nodes(self) -> int:
        return len(self.node_token)

    def chunks(self, size: int, device: torch.device) -> list[TrieChunk]:
        """The nodes as chunks of whole first-token subtrees, about ``size`` nodes each (a larger
        subtree is one chunk of its own), so that every node's ancestors are in its chunk."""
        key = (size, device)
        if key not in self._chunks:
            self._chunks[key] = self._make_chunks(size, device)
        return self._chunks[key]

    def _make_chunks(self, size: int, device: torch.device) -> list[TrieChunk]:
        starts = [i for i, d in enumerate(self.node_depth) if d == 1] + [self.num_nodes]
        bounds, first = [], 0
        for s, e in zip(starts, starts[1:]):
            if e - first > size and s > first:
                bounds.append((first, s))
                first = s
        if first < self.num_nodes:
            bounds.append((first, self.num_nodes))
        return [self._chunk(s, e, device) for s, e in bounds]

    def _chunk(self, start: int, end: int, device: torch.device) -> TrieChunk:
        m = end - start
        tree = torch.eye(m, dtype=torch.bool)
        for i in range(m):
            j = self.node_parent[start + i]
            while j >= 0:
                tree[i, j - start] = True
                j = self.node_parent[j]
        edges = [e for e, src in enumerate(self.edge_src) if start <= src < end]
        return TrieChunk(
            tokens=torch.tensor(self.node_token[start:end], device=device),
            depth=torch.tensor(self.node_depth[start:end], device=device),
            tree=tree.to(device),
            edge_src=torch.tensor([self.edge_src[e] - start for e in edges], dtype=torch.long, device=device),
            edge_token=torch.tensor([self.edge_token[e] for e in edges], dtype=torch.long, device=device),
            edge_ids=torch.tensor(edges, dtype=torch.long, device=device),
        )


def _token_log_probs(logits: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """logits (Q, M, V); per edge its source position ``rows`` (e,) and ``tokens`` (e,) -> (Q, e) log-probs
    (the log-softmax of the gathered entries only, not of the whole (Q, M, V) tensor)."""
    logits = logits.float()
    return logits[:, rows, tokens] - logits.logsumexp(-1)[:, rows]


@torch.no_grad()
def score_answers(decoder: TextDecoder, clip_kv: list[KV], prompts: list[list[int]], trie: AnswerTrie,
                  pad_id: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Score every candidate of ``trie`` after each prompt, all prompts about ONE clip.

    clip_kv: per cross block, the clip's K/V (1, H, N, hd). Prompts go through the decoder
    ``batch_size`` at a time, each batch with about ``batch_size / len(batch)`` trie nodes per pass.
    A candidate is cut where the context ends (the tokens past it are not scored). Returns (Q, K)
    summed log-probabilities and (Q, K) the number of tokens scored, on the CPU.
    """
    device = clip_kv[0][0].device
    limit = decoder.context_length
    edge_depth = torch.tensor(trie.edge_depth, device=device)
    first_edges = [e for e, src in enumerate(trie.edge_src) if src < 0]  # a candidate's first token
    root = torch.tensor(first_edges, dtype=torch.long, device=device)
    root_tokens = torch.tensor([trie.edge_token[e] for e in first_edges], dtype=torch.long, device=device)
    width = max(len(p) for p in trie.paths)
    num_edges = len(trie.edge_src)
    paths = torch.tensor([p + [num_edges] * (width - len(p)) for p in trie.paths], device=device)  # pad: a 0 column
    lengths = torch.tensor([len(p) for p in trie.paths], device=device)
    sums, counts = [], []
    for g0 in range(0, len(prompts), batch_size):
        group = prompts[g0: g0 + batch_size]
        cross = ClipKV(clip_kv, (len(group),))
        ids, valid = left_pad(group, pad_id, device)
        states, prompt_cache = decoder.generative_states(ids, cross, None, valid)
        edge_lp = torch.zeros(len(group), num_edges + 1, device=device)
        edge_lp[:, root] = _token_log_probs(decoder.logits(states[:, -1:]), torch.zeros_like(root), root_tokens)
        for chunk in trie.chunks(max(1, batch_size // len(group)), device):
            node_ids = chunk.tokens.expand(len(group), -1)
            node_states = decoder.tree_states(node_ids, chunk.depth, chunk.tree, cross, prompt_cache)
            edge_lp[:, chunk.edge_ids] = _token_log_probs(decoder.logits(node_states), chunk.edge_src,
                                                          chunk.edge_token)
        room = torch.tensor([limit - len(p) for p in group], device=device)[:, None]  # (G, 1)
        edge_lp[:, :num_edges].masked_fill_(edge_depth[None] > room, 0.0)  # tokens past the context: not scored
        sums.append(edge_lp[:, paths].sum(-1).cpu())
        counts.append(torch.minimum(lengths[None], room).cpu())
    return torch.cat(sums), torch.cat(counts)
