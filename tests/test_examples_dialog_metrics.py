"""The dialog example's generation metrics against their references: NLTK's BLEU, one fixed embedding space."""

from __future__ import annotations

import math

import pytest
import torch
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import sentence_bleu as nltk_bleu

from examples.dialog_cvae.data import DialogDataModule
from examples.dialog_cvae.embeddings import load_word_vectors, ppmi_svd_vectors
from examples.dialog_cvae.metrics import bleu_precision_recall, sentence_bleu


def _nltk(hyp: list, ref: list, n: int, pad: bool = True) -> float:
    """NLTK's method7 BLEU-n; ``pad``: weights padded with zeros to four orders, as Fu et al.'s evaluation."""
    weights = [1.0 / n] * n + ([0.0] * (4 - n) if pad else [])
    return nltk_bleu([ref], hyp, weights=weights, smoothing_function=SmoothingFunction().method7)


HARD_CASES = [
    # No matching 4-gram: torchmetrics' bleu_score returned 0 here whatever the smoothing.
    ("yes , the soup please .", "yes , the pasta please ."),
    # Shorter than 4 tokens and identical to the reference: not 0 either.
    ("thank you", "thank you"),
    ("yes", "yes , please"),
    ("no idea at all", "i have no idea"),
    ("a b c d e f", "f e d c b a"),  # unigrams only
]


@pytest.mark.parametrize(("hyp", "ref"), HARD_CASES)
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_sentence_bleu_equals_nltk_method7(hyp: str, ref: str, n: int) -> None:
    h, r = hyp.split(), ref.split()
    assert sentence_bleu(h, r, n) == pytest.approx(_nltk(h, r, n), abs=1e-12)
    assert sentence_bleu(h, r, n, convention="unpadded") == pytest.approx(_nltk(h, r, n, pad=False), abs=1e-12)


def test_sentence_bleu_hand_computed_paper_and_unpadded() -> None:
    """method7 = method4 (a zero precision p_k gets ln(len) / (2^i * 5) / count) then method5 (p_k -> the mean
    of p_{k-1}, p_k, p_{k+1}, with p_0 = p_1 + 1 and the 5-gram precision after the weights' last order).

    hyp "a b c d", ref "a b x d" (brevity penalty 1): p1 = 3/4, p2 = 1/3, p3 = 0/2, p4 = 0/1, p5 = 0.
    Paper (weights padded to 4 orders): method4 sets p3 = ln 4 / 10 / 2 and p4 = ln 4 / 20 / 1; then
    p1' = (1.75 + 0.75 + 1/3) / 3 and p2' = (p1' + 1/3 + ln 4 / 20) / 3.
    Unpadded (weights of length n): the neighbour after the last order is p5 = 0.
    """
    h, r = ["a", "b", "c", "d"], ["a", "b", "x", "d"]
    p1 = (1.75 + 0.75 + 1 / 3) / 3
    assert sentence_bleu(h, r, 1) == pytest.approx(p1, abs=1e-12)
    assert sentence_bleu(h, r, 2) == pytest.approx(math.sqrt(p1 * (p1 + 1 / 3 + math.log(4) / 20) / 3), abs=1e-12)
    assert sentence_bleu(h, r, 1, convention="unpadded") == pytest.approx((1.75 + 0.75 + 0) / 3, abs=1e-12)
    assert sentence_bleu(h, r, 2, convention="unpadded") == pytest.approx(math.sqrt(p1 * (p1 + 1 / 3 + 0) / 3))
    # Identical 3-token sentences: p1 = p2 = p3 = 1, so the paper's BLEU-1 is (2 + 1 + 1) / 3, the unpadded 1.
    assert sentence_bleu([5, 6, 7], [5, 6, 7], 1) == pytest.approx(4 / 3, abs=1e-12)
    assert sentence_bleu([5, 6, 7], [5, 6, 7], 1, convention="unpadded") == pytest.approx(1.0, abs=1e-12)
    # BLEU-4 has nothing to pad: the conventions agree.
    assert sentence_bleu(h, r, 4) == sentence_bleu(h, r, 4, convention="unpadded")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_gram": 0}, "`n_gram` must be a positive int, got 0"), ({"convention": "nltk"}, "`convention` must be")],
)
def test_sentence_bleu_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sentence_bleu([1], [1], **{"n_gram": 1, **kwargs})


def test_the_hard_cases_are_not_zero() -> None:
    assert (
        sentence_bleu(["yes", ",", "the", "soup", "please", "."], ["yes", ",", "the", "pasta", "please", "."], 4) > 0.3
    )
    assert sentence_bleu(["thank", "you"], ["thank", "you"], 4) > 0.4
    # Token ids score like words.
    assert sentence_bleu([7, 8], [7, 8], 4) == pytest.approx(_nltk(["x", "y"], ["x", "y"], 4))
    assert sentence_bleu([], [1, 2], 4) == 0.0 and sentence_bleu([1], [], 4) == 0.0
    with pytest.raises(ValueError, match="n_gram"):
        sentence_bleu([1], [1], 0)


def test_multi_reference_protocol_with_nltk_scores() -> None:
    hyps = [[1, 2, 3], [4, 5], [1, 9, 3, 4, 5]]
    refs = [[1, 2, 3, 4], [4, 5, 6], [7]]
    out = bleu_precision_recall(hyps, refs)
    for n in (1, 2, 3, 4):
        scores = [[_nltk(h, r, n) for r in refs] for h in hyps]
        precision = sum(max(row) for row in scores) / len(hyps)
        recall = sum(max(scores[i][j] for i in range(len(hyps))) for j in range(len(refs))) / len(refs)
        assert out[f"bleu{n}_p"] == pytest.approx(precision)
        assert out[f"bleu{n}_r"] == pytest.approx(recall)
        assert out[f"bleu{n}_f1"] == pytest.approx(2 * precision * recall / (precision + recall))


# ------------------------------------------------------------------------------------------ embedding space
def test_ppmi_svd_vectors_are_deterministic_and_leave_the_global_rng_alone() -> None:
    sents = [[4, 5, 6, 7], [4, 5, 8], [6, 7, 9, 4], [8, 9, 5]]
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = ppmi_svd_vectors(sents, vocab_size=12, dim=3)
    assert torch.equal(torch.rand(1), before)
    assert torch.equal(a, ppmi_svd_vectors(sents, vocab_size=12, dim=3))
    assert a.shape == (12, 3)
    assert (a[:4] == 0).all() and (a[10:] == 0).all()  # specials and unseen words: no vector
    assert (a[4:10].norm(dim=1) > 0).all()
    with pytest.raises(ValueError, match="dim"):
        ppmi_svd_vectors(sents, vocab_size=12, dim=0)
    with pytest.raises(ValueError, match="co-occurring"):
        ppmi_svd_vectors([[4], [5]], vocab_size=12)


def test_ppmi_vectors_put_interchangeable_words_together() -> None:
    dm = DialogDataModule(num_train=600, num_valid=4, num_test=4)
    vecs, stoi = dm.word_vectors, dm.vocab.stoi

    def cos(a: str, b: str) -> float:
        return float(torch.nn.functional.cosine_similarity(vecs[stoi[a]], vecs[stoi[b]], dim=0))

    assert cos("pasta", "steak") > cos("pasta", "tennis")
    assert cos("red", "blue") > cos("red", "report")


def test_one_space_per_corpus_whatever_the_model(tmp_path) -> None:
    a = DialogDataModule(num_train=200, num_valid=4, num_test=4)
    b = DialogDataModule(num_train=200, num_valid=4, num_test=4)
    assert torch.equal(a.word_vectors, b.word_vectors)
    assert a.word_vectors.shape[0] == a.vocab_size


def test_load_word_vectors_glove_and_word2vec_text(tmp_path) -> None:
    itos = ["<pad>", "<unk>", "<bos>", "<eos>", "cat", "dog", "zebra"]
    glove = tmp_path / "glove.txt"
    glove.write_text("cat 1 0 0\ndog 0 1 0\nfish 0 0 1\n")
    vecs = load_word_vectors(glove, itos)
    assert vecs.shape == (7, 3)
    assert vecs[4].tolist() == [1, 0, 0] and vecs[5].tolist() == [0, 1, 0]
    assert (vecs[6] == 0).all() and (vecs[:4] == 0).all()  # out of the file's vocabulary: skipped later
    w2v = tmp_path / "w2v.txt"
    w2v.write_text("3 2\ncat 0.5 0.5\nzebra 1 2\ndog 3 4\n")
    assert load_word_vectors(w2v, itos)[6].tolist() == [1, 2]
    (tmp_path / "bad.txt").write_text("cat 1 0 0\ndog 0 1\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 3 numbers"):
        load_word_vectors(tmp_path / "bad.txt", itos)
    (tmp_path / "none.txt").write_text("fish 1 0\n")
    with pytest.raises(ValueError, match="no word of the vocabulary"):
        load_word_vectors(tmp_path / "none.txt", itos)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_word_vectors(tmp_path / "missing.txt", itos)


def test_datamodule_uses_the_embeddings_file(tmp_path) -> None:
    f = tmp_path / "vecs.txt"
    f.write_text("pasta 1 0\nsteak 0 1\n")
    dm = DialogDataModule(num_train=100, num_valid=4, num_test=4, embeddings=str(f))
    vecs = dm.word_vectors
    assert vecs.shape == (dm.vocab_size, 2)
    assert vecs[dm.vocab.stoi["pasta"]].tolist() == [1, 0]
    assert int((vecs.norm(dim=1) > 0).sum()) == 2
