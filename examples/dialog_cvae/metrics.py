"""Generation metrics of the dialog CVAE, following Zhao et al. (ACL 2017) and Fu et al. (NAACL 2019).

For one context with hypotheses ``H`` (the responses sampled from the prior) and references ``R``:

* BLEU-n **precision** = mean over h in H of max over r in R of BLEU-n(h, r) (are the samples valid?);
  **recall** = mean over r in R of max over h in H (are all valid responses covered?). Sentence BLEU
  itself is NLTK's ``sentence_bleu`` with Chen & Cherry's smoothing ``SmoothingFunction().method7`` and,
  as Fu et al.'s multi-reference evaluation (``test_mul_ref`` of the reference code) computed it, the
  uniform weights of BLEU-n *padded with zeros to four orders*: BLEU-1 uses ``(1, 0, 0, 0)``, BLEU-2
  ``(1/2, 1/2, 0, 0)``. The padding matters: ``method7`` smooths every precision with its neighbours',
  so BLEU-1 with the 1-long weights ``(1,)`` is smoothed against the 5-gram precision (usually 0) and
  comes out lower. ``convention="unpadded"`` gives the weights of length n instead; BLEU-4 is the
  same under both. This module only adds the multi-reference protocol.
* Bag-of-words embedding similarity in one fixed word-vector space per corpus (see ``embeddings.py``; never
  a model's own embeddings, so that every model is scored in the same space): (cos + 1) / 2 of the
  **average** vectors, and of the **extrema** vectors (per dimension the value of largest magnitude),
  reduced to precision / recall the same way. Words without a vector are skipped.
* **distinct-n**: distinct n-grams / all n-grams over every sample (torchmetrics has no such metric).

Sequences are lists of token ids (no ``<bos>``, cut at ``<eos>``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

import torch
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu as _nltk_sentence_bleu
from torchmetrics import Metric

Tokens = Sequence[int]


_SMOOTHING = SmoothingFunction().method7


#: Weight conventions of :func:`sentence_bleu`: the paper's (padded to four orders) and the unpadded one.
BleuConvention = Literal["paper", "unpadded"]
_CONVENTIONS = ("paper", "unpadded")


def sentence_bleu(hyp: Tokens, ref: Tokens, n_gram: int, convention: BleuConvention = "paper") -> float:
    """Sentence BLEU-``n_gram`` of one hypothesis against one reference, as the paper computed it.

    NLTK's ``sentence_bleu`` with cumulative uniform weights over the first ``n_gram`` orders and Chen &
    Cherry's ``method7`` smoothing, so a hypothesis with no matching 4-gram, or shorter than 4 tokens, still
    scores above 0. An empty hypothesis or reference scores 0 (the reference code's ``except: 0.0``).

    ``method7`` applies ``method4`` (a zero n-gram precision gets a small count) and then ``method5``, which
    replaces each precision p_k by the mean of (p_{k-1}, p_k, p_{k+1}), with p_0 := p_1 + 1 and, past the
    last order of the weights, the 5-gram precision. Hence the two conventions:

    * ``"paper"`` (Fu et al.'s multi-reference evaluation): weights ``(1/n,) * n`` padded with zeros to four
      orders, so p_n is smoothed with the real p_{n+1}; a hypothesis equal to its reference scores above 1
      (BLEU-1 of 3 identical tokens: (2 + 1 + 1) / 3 = 4/3).
    * ``"unpadded"``: weights ``(1/n,) * n``; p_n is smoothed with the 5-gram precision instead (BLEU-1 of
      3 identical tokens: (2 + 1 + 0) / 3 = 1).

    For ``n_gram >= 4`` the two are the same.

    Args:
        hyp: the hypothesis' tokens (ids or strings).
        ref: the reference's tokens.
        n_gram: the highest n-gram order, >= 1.
        convention: ``"paper"`` (default) or ``"unpadded"``, see above.

    Raises:
        ValueError: if ``n_gram`` is not a positive int or ``convention`` is unknown.

    >>> round(sentence_bleu([5, 6, 7], [5, 6, 7], n_gram=1), 4)
    1.3333
    >>> sentence_bleu([5, 6, 7], [5, 6, 7], n_gram=1, convention="unpadded")
    1.0
    >>> round(sentence_bleu([5, 6, 7, 8, 9], [5, 6, 7, 8, 9], n_gram=4), 4)
    1.1167
    >>> sentence_bleu([], [5, 6], n_gram=1)
    0.0
    >>> round(sentence_bleu([5, 6], [5, 6], n_gram=4), 4)  # shorter than 4 tokens, identical: not 0
    0.4359
    """
    if not isinstance(n_gram, int) or isinstance(n_gram, bool) or n_gram < 1:
        raise ValueError(f"`n_gram` must be a positive int, got {n_gram!r}")
    if convention not in _CONVENTIONS:
        raise ValueError(f"`convention` must be one of {_CONVENTIONS}, got {convention!r}")
    if not hyp or not ref:
        return 0.0
    weights = (1.0 / n_gram,) * n_gram
    if convention == "paper" and n_gram < 4:
        weights += (0.0,) * (4 - n_gram)
    return float(_nltk_sentence_bleu([list(ref)], list(hyp), weights=weights, smoothing_function=_SMOOTHING))


def precision_recall(scores: torch.Tensor) -> tuple[float, float]:
    """Reduce a (num_hyps, num_refs) score matrix: precision = mean_h max_r, recall = mean_r max_h.

    >>> precision_recall(torch.tensor([[1.0, 0.0], [0.5, 0.0]]))
    (0.75, 0.5)
    """
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"`scores` must be a non-empty (num_hyps, num_refs) matrix, got shape {tuple(scores.shape)}")
    return float(scores.max(dim=1).values.mean()), float(scores.max(dim=0).values.mean())


def bleu_precision_recall(
    hyps: Sequence[Tokens],
    refs: Sequence[Tokens],
    max_n: int = 4,
    cache: dict | None = None,
    convention: BleuConvention = "paper",
) -> dict[str, float]:
    """BLEU-1..``max_n`` precision, recall and F1 of several hypotheses against several references.

    Args:
        hyps: the sampled responses of one context.
        refs: all valid responses of that context.
        max_n: highest n-gram order.
        cache: optional dict reused across calls; identical (hyp, ref) pairs, common when samples
            repeat, are then scored once.
        convention: the weights of :func:`sentence_bleu`; ``"paper"`` is Fu et al.'s.

    Returns:
        ``{"bleu1_p", "bleu1_r", "bleu1_f1", ..., f"bleu{max_n}_f1"}``.

    >>> out = bleu_precision_recall([[1, 2, 3]], [[1, 2, 3], [7, 8, 9]], max_n=1, convention="unpadded")
    >>> out["bleu1_p"], out["bleu1_r"]
    (1.0, 0.5)
    """
    if not hyps or not refs:
        raise ValueError(f"need at least one hypothesis and one reference, got {len(hyps)} and {len(refs)}")
    cache = {} if cache is None else cache
    out: dict[str, float] = {}
    for n in range(1, max_n + 1):
        scores = torch.zeros(len(hyps), len(refs))
        for i, h in enumerate(hyps):
            for j, r in enumerate(refs):
                key = (tuple(h), tuple(r), n, convention)
                if key not in cache:
                    cache[key] = sentence_bleu(h, r, n, convention)
                scores[i, j] = cache[key]
        p, r = precision_recall(scores)
        out[f"bleu{n}_p"], out[f"bleu{n}_r"] = p, r
        out[f"bleu{n}_f1"] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return out


def _bow_vectors(seqs: Sequence[Tokens], vectors: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One vector per sequence from the words that have a vector, and whether any word had one."""
    known = vectors.norm(dim=1) > 0
    out, has = torch.zeros(len(seqs), vectors.shape[1]), torch.zeros(len(seqs), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids = torch.as_tensor([t for t in s if 0 <= t < len(vectors)], dtype=torch.long)
        ids = ids[known[ids]]
        if ids.numel() == 0:
            continue
        e = vectors[ids]
        if kind == "average":
            out[i] = e.mean(0)
        else:  # extrema: per dimension keep the value of largest magnitude, sign included
            out[i] = e.gather(0, e.abs().argmax(0)[None]).squeeze(0)
        has[i] = True
    return out, has


def embedding_similarity(
    hyps: Sequence[Tokens], refs: Sequence[Tokens], vectors: torch.Tensor, kind: str = "average"
) -> tuple[float, float]:
    """Bag-of-words embedding precision and recall: (cos + 1) / 2 of ``kind`` vectors, reduced as BLEU is.

    Words whose row of ``vectors`` is all zeros (no vector: out of the embedding vocabulary) are skipped.
    A sequence with no word left scores 0 against everything, the worst value, as an empty response
    should.

    Args:
        hyps: the sampled responses of one context (token ids).
        refs: its references (token ids).
        vectors: (vocab, dim) fixed word vectors, the same for every model scored on a corpus
            (``embeddings.py``); a zero row means "no vector".
        kind: ``"average"`` or ``"extrema"``.

    >>> vecs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> embedding_similarity([[1]], [[1], [2]], vecs)  # cos 1 -> 1.0 and cos 0 -> 0.5
    (1.0, 0.75)
    >>> embedding_similarity([[0, 1]], [[1]], vecs)  # word 0 has no vector: skipped
    (1.0, 1.0)
    """
    if kind not in ("average", "extrema"):
        raise ValueError(f"`kind` must be 'average' or 'extrema', got {kind!r}")
    if vectors.ndim != 2:
        raise ValueError(f"`vectors` must be a (vocab, dim) matrix, got shape {tuple(vectors.shape)}")
    vectors = vectors.detach().float().cpu()
    h, h_ok = _bow_vectors(hyps, vectors, kind)
    r, r_ok = _bow_vectors(refs, vectors, kind)
    sims = (torch.nn.functional.cosine_similarity(h[:, None, :], r[None, :, :], dim=-1) + 1) / 2
    sims = sims * (h_ok[:, None] & r_ok[None, :])
    return precision_recall(sims)


def ngrams(seq: Tokens, n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(seqs: Sequence[Tokens], n: int) -> float:
    """Distinct n-grams over all n-grams of ``seqs`` (Li et al., 2016); 0 when there is none.

    >>> distinct_n([[1, 2, 3], [1, 2, 4]], n=1), distinct_n([[1, 2, 3], [1, 2, 4]], n=2)
    (0.6666666666666666, 0.75)
    """
    grams = [g for s in seqs for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


class DistinctN(Metric):
    """distinct-n accumulated over batches (and processes): keeps a hash per n-gram, counts the unique ones.

    >>> m = DistinctN(n=1)
    >>> m.update([[1, 2, 3]]); m.update([[1, 2, 4]])
    >>> round(float(m.compute()), 4)
    0.6667
    """

    full_state_update = False

    def __init__(self, n: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        if n < 1:
            raise ValueError(f"`n` must be a positive int, got {n}")
        self.n = n
        self.add_state("hashes", default=[], dist_reduce_fx="cat")

    def update(self, seqs: Sequence[Tokens]) -> None:
        # hash() of a tuple of ints is not salted (only str/bytes are), so it agrees across processes.
        hashes = [hash(g) for s in seqs for g in ngrams(list(s), self.n)]
        self.hashes.append(torch.tensor(hashes, dtype=torch.long, device=self.device))

    def compute(self) -> torch.Tensor:
        hashes = (
            self.hashes
            if isinstance(self.hashes, torch.Tensor)
            else (torch.cat(self.hashes) if self.hashes else torch.zeros(0, dtype=torch.long))
        )
        if hashes.numel() == 0:
            return torch.tensor(0.0)
        return torch.unique(hashes).numel() / torch.tensor(float(hashes.numel()))


def overlap_f1(hyp: Tokens, ref: Tokens) -> float:
    """Mean of unigram and bigram F1 overlap: the similarity used to find a sample's nearest reference.

    >>> overlap_f1([1, 2, 3], [1, 2, 3])
    1.0
    """
    total = 0.0
    for n in (1, 2):
        h, r = Counter(ngrams(hyp, n)), Counter(ngrams(ref, n))
        common = sum((h & r).values())
        if common:
            p, rc = common / sum(h.values()), common / sum(r.values())
            total += 2 * p * rc / (p + rc)
    return total / 2


def nearest_label(hyp: Tokens, refs: Sequence[Tokens], labels: Sequence[int]) -> int:
    """The hidden-factor label of the reference closest to ``hyp`` (first one on ties).

    >>> nearest_label([1, 2], [[3, 4], [1, 2, 5]], [0, 1])
    1
    """
    if len(refs) != len(labels) or not refs:
        raise ValueError(f"need one label per reference, got {len(refs)} references and {len(labels)} labels")
    scores = [overlap_f1(hyp, r) for r in refs]
    return labels[max(range(len(refs)), key=scores.__getitem__)]
