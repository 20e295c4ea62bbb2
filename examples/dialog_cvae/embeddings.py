"""One fixed word-vector space per corpus, for the embedding-based metrics (average / extrema).

Every schedule and seed must be scored in the same space, so the vectors never come from a model:

* :func:`load_word_vectors` reads a GloVe or word2vec **text** file (``--embeddings PATH``), the choice
  of Zhao et al. (ACL 2017), whose reference code scores with pre-trained GloVe vectors;
* otherwise :func:`ppmi_svd_vectors` derives them deterministically from the training split: positive
  pointwise mutual information of word co-occurrences in a window, with the context-distribution
  smoothing of Levy, Goldberg & Dagan (TACL 2015), factorised by a truncated SVD (``U * sqrt(S)``).

Words without a vector get a row of zeros, which the metrics skip.

    >>> sents = [[4, 5, 6], [4, 5, 7], [6, 7, 4]]
    >>> vecs = ppmi_svd_vectors(sents, vocab_size=8, dim=2)
    >>> vecs.shape, bool(vecs[:4].abs().sum() == 0)  # special tokens 0-3 never occur: no vector
    (torch.Size([8, 2]), True)
    >>> torch.equal(vecs, ppmi_svd_vectors(sents, vocab_size=8, dim=2))  # deterministic
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def ppmi_svd_vectors(
    sentences: Sequence[Sequence[int]],
    vocab_size: int,
    dim: int = 100,
    window: int = 4,
    alpha: float = 0.75,
    first_word: int = 4,
) -> torch.Tensor:
    """Word vectors from a corpus: PPMI of co-occurrence counts, then a truncated SVD, ``U * sqrt(S)``.

    Deterministic: the randomized SVD runs from a fixed seed (without touching the global RNG), and
    each component's sign is fixed so that its largest-magnitude entry is positive.

    Args:
        sentences: token-id sequences (e.g. every distinct utterance of the training split).
        vocab_size: number of rows of the result.
        dim: vector size; reduced to the number of words seen minus one on tiny corpora.
        window: words at most this far apart in a sentence co-occur.
        alpha: context-distribution smoothing exponent (0.75 as in Levy et al. 2015).
        first_word: ids below this are special tokens and get no vector.

    Returns:
        A float tensor (vocab_size, dim'); rows of words that never occur are zero.

    Raises:
        ValueError: on a non-positive ``dim`` or ``window``, or when no word co-occurs with another.
    """
    for name, value in (("dim", dim), ("window", window), ("vocab_size", vocab_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    toks, sent = [], []
    for i, s in enumerate(sentences):
        ids = [t for t in s if first_word <= t < vocab_size]
        toks.extend(ids)
        sent.extend([i] * len(ids))
    t, s = np.asarray(toks, dtype=np.int64), np.asarray(sent, dtype=np.int64)
    rows, cols = [], []
    for k in range(1, window + 1):
        same = s[:-k] == s[k:]
        a, b = t[:-k][same], t[k:][same]
        rows += [a, b]
        cols += [b, a]
    if not rows or sum(len(r) for r in rows) == 0:
        raise ValueError("`sentences` give no co-occurring word pair; cannot derive word vectors")
    r, c = np.concatenate(rows), np.concatenate(cols)
    keys, counts = np.unique(r * vocab_size + c, return_counts=True)
    r, c, n = keys // vocab_size, keys % vocab_size, counts.astype(np.float64)
    word = np.bincount(r, weights=n, minlength=vocab_size)
    ctx = np.bincount(c, weights=n, minlength=vocab_size) ** alpha
    pmi = np.log(n * ctx.sum() / (word[r] * ctx[c]))
    keep = pmi > 0
    seen = int((word > 0).sum())
    dim = max(1, min(dim, seen - 1))
    m = torch.sparse_coo_tensor(
        np.stack([r[keep], c[keep]]), pmi[keep], (vocab_size, vocab_size), check_invariants=True
    ).coalesce()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        u, sv, _ = torch.svd_lowrank(m, q=min(dim + 10, vocab_size), niter=6)
    u, sv = u[:, :dim], sv[:dim]
    sign = torch.sign(u.gather(0, u.abs().argmax(0, keepdim=True)))
    vecs = (u * sign * sv.sqrt()).float()
    vecs[torch.from_numpy(word == 0)] = 0.0
    return vecs


def load_word_vectors(path: str | Path, itos: Sequence[str]) -> torch.Tensor:
    """Read a GloVe / word2vec text file into a (len(itos), dim) matrix aligned with the vocabulary.

    Each line is ``word v1 v2 ... vd``; an optional first line ``count dim`` (word2vec's header) is
    skipped. Words of ``itos`` missing from the file get a zero row (skipped by the metrics). Only
    the words of the vocabulary are kept in memory.

    Args:
        path: the text file.
        itos: the vocabulary, id -> word.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming ``file:line`` when a line's dimension differs from the first vector's, or
            when no vocabulary word has a vector.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`embeddings` file not found: {path}")
    stoi = {w: i for i, w in enumerate(itos)}
    found: dict[int, list[float]] = {}
    dim = None
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.rstrip().split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue  # word2vec text header
            if len(parts) < 2:
                continue
            if dim is None:
                dim = len(parts) - 1
            elif len(parts) - 1 != dim:
                raise ValueError(f"{path}:{lineno}: expected {dim} numbers after the word, got {len(parts) - 1}")
            i = stoi.get(parts[0])
            if i is not None and i not in found:
                try:
                    found[i] = [float(x) for x in parts[1:]]
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: not a number in the vector of {parts[0]!r}") from None
    if not found or dim is None:
        raise ValueError(
            f"{path}: no word of the vocabulary ({len(itos)} words) has a vector; "
            "expected lines 'word v1 v2 ...' (GloVe or word2vec text format)"
        )
    vecs = torch.zeros(len(itos), dim)
    for i, v in found.items():
        vecs[i] = torch.tensor(v)
    return vecs
