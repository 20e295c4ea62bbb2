"""Fast tests of the dialog CVAE example: model pieces, metrics protocol, corpus, readers, entry points."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.distributions import Normal, kl_divergence

# `examples` is not an installed package; without `pythonpath = ["."]` in pytest's configuration the repo
# root is not importable under plain `pytest`, so add it here.
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import DIALOG_TINY

from examples.dialog_cvae import compare, train
from examples.dialog_cvae import corpus as corpus_module
from examples.dialog_cvae.corpus import ACTS, generate_corpus, response_entropy, split_keys
from examples.dialog_cvae.data import (
    EOS,
    DialogDataModule,
    Vocab,
    collate,
    read_dailydialog,
    read_data_dir,
    read_jsonl,
)
from examples.dialog_cvae.metrics import (
    DistinctN,
    bleu_precision_recall,
    distinct_n,
    embedding_similarity,
    nearest_label,
    sentence_bleu,
)
from examples.dialog_cvae.model import DialogCVAE, bow_loss
from lightning_kl_anneal import BatchNormPosterior

EXAMPLE_DIR = Path(__file__).resolve().parents[1] / "examples" / "dialog_cvae"

TINY = DIALOG_TINY


@pytest.fixture(scope="module")
def tiny_dm() -> DialogDataModule:
    dm = DialogDataModule(num_train=32, num_valid=8, num_test=8, batch_size=4)
    dm.setup("fit")
    return dm


# ------------------------------------------------------------------------------------------ model
def test_shapes_and_losses_on_a_tiny_batch(tiny_dm: DialogDataModule) -> None:
    torch.manual_seed(0)
    model = DialogCVAE(vocab_size=tiny_dm.vocab_size, **TINY)
    batch = next(iter(tiny_dm.train_dataloader()))
    c = model.encode_context(batch)
    assert c.shape == (4, 12)
    mu, logvar = model.posterior_params(c, batch)
    assert mu.shape == logvar.shape == (4, 4)
    logits = model.decode_logits(c, mu, batch["response"])
    assert logits.shape == (*batch["response"].shape, tiny_dm.vocab_size)

    model.beta = 0.25
    loss, m, _, latent = model._shared_step(batch, "train")
    for key in ("rec", "kl", "bow"):
        assert m[key].shape == (4,) and torch.isfinite(m[key]).all() and (m[key] >= 0).all()
    torch.testing.assert_close(m["elbo"], -(m["rec"] + m["kl"]))
    # The next draw of z differs, so check the combination rule with the logged terms of the same call.
    assert torch.isclose(loss, (m["rec"] + 0.25 * m["kl"] + 1.0 * m["bow"]).mean())
    assert set(latent) == {"mu", "logvar", "prior_mu", "prior_logvar"} and latent["prior_mu"].shape == (4, 4)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if not n.startswith("distinct"))

    samples = model.sample_responses(c)
    assert len(samples) == 4 and all(len(s) == 3 for s in samples)
    assert all(len(h) <= 6 and EOS not in h for s in samples for h in s)


def test_one_encoder_call_for_context_and_response_equals_two(tiny_dm: DialogDataModule) -> None:
    torch.manual_seed(0)
    model = DialogCVAE(vocab_size=tiny_dm.vocab_size, **TINY)
    for batch in [next(iter(tiny_dm.train_dataloader())), next(iter(tiny_dm.val_dataloader()))]:
        c, x = model._encode(batch, with_response=True)
        torch.testing.assert_close(c, model.encode_context(batch))
        torch.testing.assert_close(x, model.encode_utterances(batch["response"], batch["response_lens"]))
        torch.testing.assert_close(model.posterior_params(c, batch, x), model.posterior_params(c, batch))


def test_bow_weight_zero_gives_the_plain_cvae(tiny_dm: DialogDataModule) -> None:
    model = DialogCVAE(vocab_size=tiny_dm.vocab_size, bow_weight=0.0, beta=1.0, **TINY)
    batch = next(iter(tiny_dm.train_dataloader()))
    loss, m, _, _ = model._shared_step(batch, "train")
    assert torch.isclose(loss, (m["rec"] + m["kl"]).mean())


def test_kl_is_to_the_learned_prior(tiny_dm: DialogDataModule) -> None:
    torch.manual_seed(0)
    model = DialogCVAE(vocab_size=tiny_dm.vocab_size, **TINY)
    _, m, _, lat = model._shared_step(next(iter(tiny_dm.val_dataloader())), "val")
    q = Normal(lat["mu"], (0.5 * lat["logvar"]).exp())
    p = Normal(lat["prior_mu"], (0.5 * lat["prior_logvar"]).exp())
    torch.testing.assert_close(m["kl"], kl_divergence(q, p).sum(-1))


def test_bow_loss_hand_computed() -> None:
    logits = torch.tensor([[0.0, math.log(2.0), math.log(3.0), 0.0]])  # softmax = [1, 2, 3, 1] / 7
    targets = torch.tensor([[2, 2, 1, 0, 0]])  # word 2 twice, word 1 once, then padding
    expected = -(2 * math.log(3 / 7) + math.log(2 / 7))
    assert bow_loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(vocab_size=3), "vocab_size"),
        (dict(latent_dim=0), "latent_dim"),
        (dict(bow_weight=-1.0), "bow_weight"),
        (dict(lr_restart_cycles=-2), "lr_restart_cycles"),
    ],
)
def test_bad_model_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DialogCVAE(**{**TINY, "vocab_size": 50, **kwargs})


def test_bn_gamma_batch_normalises_the_posterior_mean_and_trains(tiny_dm: DialogDataModule) -> None:
    torch.manual_seed(0)
    plain = DialogCVAE(vocab_size=tiny_dm.vocab_size, **TINY)
    torch.manual_seed(0)
    model = DialogCVAE(vocab_size=tiny_dm.vocab_size, bn_gamma=0.5, **TINY)
    assert plain.mu_norm is None and isinstance(model.mu_norm, BatchNormPosterior)
    assert DialogCVAE(vocab_size=tiny_dm.vocab_size, bn_gamma=0.0, **TINY).mu_norm is None  # 0 is off too
    for key, value in plain.state_dict().items():  # the other weights are drawn as without it
        torch.testing.assert_close(model.state_dict()[key], value)
    batch = next(iter(tiny_dm.train_dataloader()))
    c, x = model._encode(batch, with_response=True)
    mu, _ = model.posterior_params(c, batch, x)
    raw, _ = plain.posterior_params(c, batch, x)
    torch.testing.assert_close(mu, model.mu_norm(raw))  # the posterior mean goes through the module
    assert not torch.allclose(mu, raw)
    trainer = L.Trainer(max_steps=3, limit_val_batches=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(model, tiny_dm)
    assert trainer.global_step == 3
    (metrics,) = trainer.validate(model, tiny_dm, verbose=False)  # eval mode: the running statistics
    assert math.isfinite(metrics["val/elbo"])
    assert compare.parse_args(["--bn-gamma", "0.5"]).bn_gamma == 0.5 and compare.parse_args([]).bn_gamma is None
    with pytest.raises(ValueError, match="`bn_gamma` must be None or a finite number >= 0"):
        DialogCVAE(vocab_size=tiny_dm.vocab_size, bn_gamma=-1.0, **TINY)


class _RecordLR(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_lr_restarts_follow_a_cosine_per_cycle(tiny_dm: DialogDataModule) -> None:
    model = DialogCVAE(vocab_size=tiny_dm.vocab_size, lr=0.01, lr_restart_cycles=2, **TINY)
    rec = _RecordLR()
    trainer = L.Trainer(
        max_steps=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[rec],
    )
    trainer.fit(model, datamodule=tiny_dm)
    cosine = [0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    assert rec.lrs == pytest.approx([0.01 * c for c in cosine * 2])
    assert rec.lrs == pytest.approx([0.01, 0.0085355339, 0.005, 0.0014644661] * 2)  # by hand; restarts at step 4
    assert isinstance(trainer.lr_scheduler_configs[0].scheduler, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)


def test_lr_restarts_every_period(tiny_dm: DialogDataModule) -> None:
    model = DialogCVAE(vocab_size=tiny_dm.vocab_size, lr=0.01, lr_restart_period=3, **TINY)
    rec = _RecordLR()
    trainer = L.Trainer(
        max_steps=7,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[rec],
    )
    trainer.fit(model, datamodule=tiny_dm)
    cosine = [0.5 * (1 + math.cos(math.pi * t / 3)) for t in range(3)]
    assert rec.lrs == pytest.approx([0.01 * c for c in (cosine * 3)[:7]])
    assert rec.lrs == pytest.approx([0.01, 0.0075, 0.0025] * 2 + [0.01])  # by hand: cos(pi/3) = 1/2; restarts at 3, 6
    with pytest.raises(ValueError, match="both set the restarts"):
        DialogCVAE(vocab_size=tiny_dm.vocab_size, lr_restart_cycles=2, lr_restart_period=3, **TINY)
    with pytest.raises(ValueError, match="`lr_restart_period` must be an int >= 2"):
        DialogCVAE(vocab_size=tiny_dm.vocab_size, lr_restart_period=1, **TINY)


# ------------------------------------------------------------------------------------------ metrics
def test_bleu_precision_recall_protocol() -> None:
    refs = [[1, 2, 3, 4], [5, 6, 7, 8]]
    # One sample equal to the first reference, one unrelated: precision averages over samples,
    # recall over references.
    out = bleu_precision_recall([[1, 2, 3, 4], [9, 9, 9, 9]], refs, max_n=2)
    exact1 = sentence_bleu(refs[0], refs[0], 1)  # above 1 under the paper's weights (method7)
    assert out["bleu1_p"] == pytest.approx((exact1 + sentence_bleu([9, 9, 9, 9], refs[0], 1)) / 2)
    assert out["bleu1_r"] == pytest.approx(
        (exact1 + max(sentence_bleu(h, refs[1], 1) for h in ([1, 2, 3, 4], [9, 9, 9, 9]))) / 2
    )
    assert out["bleu2_f1"] == pytest.approx(2 * out["bleu2_p"] * out["bleu2_r"] / (out["bleu2_p"] + out["bleu2_r"]))
    # Covering both references with two samples gives the best recall; repeating one sample does not.
    # (NLTK's method7 scores an exact 4-token match slightly above 1, hence `exact`.)
    exact = sentence_bleu(refs[0], refs[0], 4)
    assert bleu_precision_recall(refs, refs)["bleu4_r"] == pytest.approx(exact)
    repeated = bleu_precision_recall([refs[0]] * 5, refs)
    assert repeated["bleu4_r"] == pytest.approx((exact + sentence_bleu(refs[0], refs[1], 4)) / 2)
    assert repeated["bleu4_p"] == pytest.approx(exact)
    with pytest.raises(ValueError, match="at least one"):
        bleu_precision_recall([], refs)


def test_embedding_similarity_average_and_extrema() -> None:
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-2.0, 0.5]])
    assert embedding_similarity([[1, 2]], [[2, 1]], emb, "average") == pytest.approx((1.0, 1.0))
    # Extrema keeps the signed value of largest magnitude per dimension: [1,2,3] -> [-2, 1].
    p, r = embedding_similarity([[1, 2, 3]], [[3, 2]], emb, "extrema")
    assert p == pytest.approx(1.0) and r == pytest.approx(1.0)
    # (cos + 1) / 2: orthogonal -> 0.5, opposite -> 0.
    assert embedding_similarity([[1]], [[2]], emb) == pytest.approx((0.5, 0.5))
    opposite = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    assert embedding_similarity([[1]], [[2]], opposite) == pytest.approx((0.0, 0.0))
    # Words without a vector (zero rows, e.g. id 0) are skipped; a response with none left scores 0.
    assert embedding_similarity([[0, 1, 0]], [[1]], emb) == pytest.approx((1.0, 1.0))
    assert embedding_similarity([[0], [1]], [[1]], emb) == pytest.approx((0.5, 1.0))
    assert embedding_similarity([[99]], [[1]], emb) == pytest.approx((0.0, 0.0))  # out of range: no vector
    with pytest.raises(ValueError, match="kind"):
        embedding_similarity([[1]], [[1]], emb, "max")


def test_distinct_n_functional_and_accumulated() -> None:
    seqs = [[1, 2, 3], [1, 2, 4], [5]]
    assert distinct_n(seqs, 1) == pytest.approx(5 / 7)
    assert distinct_n(seqs, 2) == pytest.approx(3 / 4)
    m = DistinctN(2)
    for s in seqs:
        m.update([s])
    assert float(m.compute()) == pytest.approx(3 / 4)
    assert distinct_n([[1]], 2) == 0.0


def test_nearest_label() -> None:
    refs, labels = [[1, 2, 3], [4, 5, 6]], [3, 0]
    assert nearest_label([4, 5], refs, labels) == 0
    with pytest.raises(ValueError, match="one label per reference"):
        nearest_label([1], refs, [0])


# ------------------------------------------------------------------------------------------ corpus
def test_references_are_a_function_of_the_visible_context() -> None:
    corpus = generate_corpus(3000, 300, 200, seed=1234)
    refs: dict[tuple[str, ...], set] = {}
    for split, examples in corpus.items():
        for ex in examples:
            refs.setdefault(ex.context, set()).add(ex.references)
            # Evaluation responses are references; training responses are fresh draws of the distribution.
            assert split == "train" or ex.response in ex.references
    assert all(len(r) == 1 for r in refs.values())


def test_splits_share_no_context_and_test_combinations_are_unseen() -> None:
    corpus = generate_corpus(3000, 300, 200, seed=1234)
    contexts = {split: {ex.context for ex in exs} for split, exs in corpus.items()}
    assert contexts["train"].isdisjoint(contexts["test"])
    assert contexts["train"].isdisjoint(contexts["valid"])
    assert contexts["valid"].isdisjoint(contexts["test"])
    assert len(contexts["test"]) == 200  # test contexts are distinct
    # The test split's slot combinations never occur in training, so neither does any test reference set...
    train_refs = {ex.references for ex in corpus["train"]}
    assert all(ex.references not in train_refs for ex in corpus["test"])
    train_pairs = {(t.response, *t.context) for t in corpus["train"]}
    assert all((ex.response, *ex.context) not in train_pairs for ex in corpus["test"])
    # ...while every word of a test context is a training word: new combinations of known values.
    train_words = {w for ex in corpus["train"] for u in (*ex.context, *ex.references) for w in u.split()}
    assert {w for ex in corpus["test"] for u in (*ex.context, *ex.references) for w in u.split()} <= train_words
    keys = split_keys(seed=1234)
    assert set(keys["train"]).isdisjoint(keys["test"]) and set(keys["train"]).isdisjoint(keys["valid"])
    with pytest.raises(ValueError, match="test_fraction"):
        split_keys(seed=0, test_fraction=0.7)
    with pytest.raises(ValueError, match="num_test"):
        generate_corpus(10, 10, 5000, seed=0)


def test_corpus_is_deterministic_with_multiple_labelled_references() -> None:
    a, b = generate_corpus(50, 5, 10, seed=7), generate_corpus(50, 5, 10, seed=7)
    assert a == b
    assert a != generate_corpus(50, 5, 10, seed=8)
    for ex in a["test"]:
        assert len(ex.references) == len(ex.ref_labels) == 2 * len(ACTS)
        assert set(ex.ref_labels) == set(range(len(ACTS)))
        assert ex.response in ex.references
        assert ex.ref_labels[ex.references.index(ex.response)] == ex.label
        assert len(ex.context) == len(ex.speakers) and ex.speakers[-1] == 0  # the other side spoke last
    # Every act occurs: the hidden factor is not a constant.
    assert {ex.label for ex in a["train"]} == set(range(len(ACTS)))
    with pytest.raises(ValueError, match="num_train"):
        generate_corpus(num_train=-1)


def _scenario_responses(scenario: int, key_index: int = 0):
    keys = corpus_module._SCENARIOS[scenario][0]()
    return corpus_module._SCENARIOS[scenario][1](keys[key_index], __import__("random").Random(0))[1]


def test_corpus_stats_json_matches_the_corpus_and_leaves_z_something_to_carry() -> None:
    stats = json.loads((EXAMPLE_DIR / "figures" / "corpus_stats.json").read_text())
    # The target: at least 4 nats of the response left after its first two tokens.
    assert stats["h_after_2_tokens_nats"] >= 4.0 and stats["h_after_2_tokens_min_nats"] >= 4.0
    # Recomputed exactly on test contexts of every scenario (the committed file averages all 300).
    data = corpus_module._generate(0, 0, 24, seed=stats["corpus"]["seed"])
    for _, responses in data["test"]:
        h, h2 = response_entropy(responses, after_tokens=2)
        assert h == pytest.approx(stats["h_response_given_context_nats"], abs=1e-3)
        assert h2 == pytest.approx(stats["h_after_2_tokens_nats"], abs=1e-3)
    # Every response is a distinct string: H(x | c) is the sum of the factors' and the noise's entropies.
    assert stats["h_response_given_context_nats"] == pytest.approx(sum(stats["factor_entropy_nats"].values()), abs=1e-3)
    assert stats["h_after_2_tokens_nats"] == pytest.approx(
        stats["h_response_given_context_nats"] - stats["factor_entropy_nats"]["noise: opener (the first two tokens)"],
        abs=1e-3,
    )
    for scenario in range(len(corpus_module._SCENARIOS)):
        h, h2 = response_entropy(_scenario_responses(scenario), after_tokens=2)
        assert h2 == pytest.approx(stats["h_after_2_tokens_nats"], abs=1e-3)


def test_responses_are_12_to_21_tokens() -> None:
    stats = json.loads((EXAMPLE_DIR / "figures" / "corpus_stats.json").read_text())
    corpus = generate_corpus(2000, 100, 100, seed=1234)
    lengths = [len(r.split()) for exs in corpus.values() for ex in exs for r in (ex.response, *ex.references)]
    assert 12 <= min(lengths) and max(lengths) <= 21
    assert 14 <= sum(lengths) / len(lengths) <= 20
    assert stats["response_tokens"]["min"] >= 12 and stats["response_tokens"]["max"] <= 21
    for scenario in range(len(corpus_module._SCENARIOS)):
        all_lengths = [len(t.split()) for t in corpus_module.response_distribution(_scenario_responses(scenario))]
        assert 12 <= min(all_lengths) and max(all_lengths) <= 21


def _differing_positions(a: str, b: str) -> list[int]:
    x, y = a.split(), b.split()
    assert len(x) == len(y), (a, b)
    return [i for i, (u, v) in enumerate(zip(x, y)) if u != v]


@pytest.mark.parametrize("scenario", range(4))
def test_factors_are_said_at_several_positions_and_the_wording_varies_by_token(scenario: int) -> None:
    r = _scenario_responses(scenario)
    compose = corpus_module._compose
    base = (0, 0, 0, 0, 0, 0, 0)  # opener, filler 1, act, phrasing, detail 1, filler 2, detail 2
    # Detail 1 (same length for every value): its phrase and its echo in the closing tag, far apart.
    for d1 in range(1, len(r.detail1)):
        pos = _differing_positions(compose(r, base), compose(r, (0, 0, 0, 0, d1, 0, 0)))
        assert len(pos) >= 2 and pos[-1] - pos[0] >= 3
    # The act changes the clause (right after the opener) and the closing tag (the last tokens).
    for act in range(1, len(ACTS)):
        a, b = compose(r, base).split(), compose(r, (0, 0, act, 0, 0, 0, 0)).split()
        assert a[2:4] != b[2:4] and a[-4:] != b[-4:]  # the tag is the last 3-4 tokens
    # Noise: the first two tokens are the opener alone, and the fillers add a token each.
    for opener in range(1, len(corpus_module.OPENERS)):
        assert _differing_positions(compose(r, base), compose(r, (opener, 0, 0, 0, 0, 0, 0))) == [0]
    assert len(compose(r, (0, 1, 0, 0, 0, 1, 0)).split()) == len(compose(r, base).split()) + 2
    # (That the first two tokens say nothing else: H(x | c, x_1, x_2) = H(x | c) - ln 5, tested above.)


# ------------------------------------------------------------------------------------------ readers
def test_read_dailydialog_pairs_speakers_and_counted_skips(tmp_path) -> None:
    f = tmp_path / "dialogues_train.txt"
    f.write_text(
        "Hi , how are you ? __eou__ Fine , thanks . __eou__ Good ! __eou__\n"
        "\n"
        "only one utterance __eou__\n"
        "A __eou__ B __eou__\n"
    )
    with pytest.warns(UserWarning, match=r"skipped 1 line.*line 3"):
        exs = read_dailydialog(f, context_turns=1)
    assert [ex.response for ex in exs] == ["fine , thanks .", "good !", "b"]
    assert exs[1].context == ("fine , thanks .",)  # context_turns=1 keeps only the last utterance
    with pytest.warns(UserWarning):
        assert read_dailydialog(f, context_turns=5)[1].speakers == (1, 0)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_dailydialog(tmp_path / "missing.txt")


def test_read_jsonl_and_its_errors(tmp_path) -> None:
    f = tmp_path / "train.jsonl"
    f.write_text(
        '{"context": ["Hello there", "Hi!"], "response": "How are you?", "references": ["How are you?", "Hey"]}\n'
        '\n{"context": ["x"], "response": "y"}\n'
    )
    exs = read_jsonl(f)
    assert exs[0].context == ("hello there", "hi !") and exs[0].references == ("how are you ?", "hey")
    assert exs[1].references == ("y",) and exs[0].speakers == (1, 0)
    for bad, match in [
        ("not json", r"bad.jsonl:2: invalid JSON"),
        ('{"context": [], "response": "y"}', r"bad.jsonl:2: `context`"),
        ('{"context": ["x"], "response": 3}', r"bad.jsonl:2: `response`"),
        ('{"context": ["x"], "response": "y", "references": []}', r"bad.jsonl:2: `references`"),
        ("[1, 2]", r"bad.jsonl:2: expected a JSON object"),
    ]:
        (tmp_path / "bad.jsonl").write_text('{"context": ["a"], "response": "b"}\n' + bad + "\n")
        with pytest.raises(ValueError, match=match):
            read_jsonl(tmp_path / "bad.jsonl")


def test_read_data_dir_layouts_and_missing_split(tmp_path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "dialogues_train.txt").write_text("a b __eou__ c d __eou__\n")
    (tmp_path / "dialogues_validation.txt").write_text("e __eou__ f __eou__\n")
    with pytest.raises(FileNotFoundError, match="no test file"):
        read_data_dir(tmp_path)
    (tmp_path / "test.jsonl").write_text(json.dumps({"context": ["g"], "response": "h"}) + "\n")
    splits = read_data_dir(tmp_path)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [1, 1, 1]
    dm = DialogDataModule(data_dir=str(tmp_path), batch_size=2)
    dm.setup("fit")
    batch = collate([dm.datasets["train"][0]])
    assert batch["label"].tolist() == [-1] and batch["references"][0] == [dm.vocab.encode(["c", "d"])]


def test_vocab_rejects_missing_specials() -> None:
    with pytest.raises(ValueError, match="itos"):
        Vocab(["a", "b"])


# ------------------------------------------------------------------------------------------ entry points
def test_train_cli_fast_dev_run(tmp_path) -> None:
    train.main(
        [
            "fit",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            "--data.num_train=16",
            "--data.num_valid=4",
            "--data.num_test=4",
            "--data.batch_size=4",
            "--model.embed_dim=8",
            "--model.utt_hidden=8",
            "--model.ctx_hidden=8",
            "--model.dec_hidden=8",
            "--model.latent_dim=4",
            "--model.prior_hidden=8",
            "--model.bow_hidden=8",
            "--trainer.logger=false",
        ]
    )


def test_compare_fast_dev_run_writes_results(tmp_path) -> None:
    results = compare.main(
        [
            "--fast-dev-run",
            "--seeds",
            "0",
            "1",
            "--schedules",
            "constant",
            "monotonic",
            "cyclical",
            "--out",
            str(tmp_path),
        ]
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    for name in ("constant", "monotonic", "cyclical"):
        assert set(saved[name]) == {"seeds", "best", "val", "mean", "std", "best_mean", "best_std"}
        for key in ("elbo", "rec", "kl", "bow", "bleu4_r", "distinct2", "factor_acc", "emb_avg_r"):
            assert key in saved[name]["mean"] and key in saved[name]["seeds"]["0"] and key in saved[name]["val"]["0"]
            assert key in saved[name]["best"]["1"]
        assert "step" in saved[name]["best"]["0"]
        assert saved[name]["mean"] == results[name]["mean"]
    config = saved["config"]
    assert config["std"] == "sample (ddof=1)" and config["seeds"] == [0, 1] and config["steps"] == compare.DEFAULT_STEPS
    assert config["commit"] != "unknown" and "command" in config and config["bow_weight"] == 1.0  # CVAE + BoW
    assert config["completed"] == {"constant": [0, 1], "monotonic": [0, 1], "cyclical": [0, 1]}
    assert config["schedules"]["monotonic"] == {
        "n_cycle": 1,
        "ratio": 1.0,
        "total_steps": compare.DEFAULT_MONOTONIC_STEPS,
    }
    assert config["schedules"]["cyclical"]["period"] == compare.DEFAULT_PERIOD
    assert config["schedules"]["cyclical"]["n_cycle"] is None and config["schedules"]["cyclical"]["ratio"] == 2 / 3
    assert all(v == {"lr_restart_cycles": 0, "lr_restart_period": None} for v in config["lr"].values())
    # Paired per-seed differences with a sign test and a bootstrap interval; yes/no outcomes with Wilson intervals.
    pair = saved["comparison"]["pairs"]["cyclical - monotonic"]["seeds"]["kl"]
    kl = {s: saved["cyclical"]["seeds"][s]["kl"] - saved["monotonic"]["seeds"][s]["kl"] for s in ("0", "1")}
    assert pair["per_seed"] == pytest.approx(kl) and pair["mean"] == pytest.approx(sum(kl.values()) / 2)
    assert {"bootstrap95", "p_two_sided", "wins", "losses", "ties", "std"} <= set(pair)
    outcome = saved["comparison"]["act_from_z"]["cyclical"]["best"]
    assert outcome["n"] == 2 and len(outcome["wilson95"]) == 2
    # LatentMonitor is attached with the CVAE's prior keys: its values are in the validation record.
    assert {"latent/kl", "latent/active_units", "collapse_alert_step"} <= set(saved["cyclical"]["val"]["0"])
    assert "latent/mi" not in saved["cyclical"]["val"]["0"]  # MI is for the unconditional prior only
    assert (tmp_path / "samples.txt").read_text().count("context:") == 3

    # Two tables of one seed each, merged, give the two-seed table's statistics (and refuse other settings).
    for seed in ("0", "1"):
        part = json.loads(json.dumps(saved))
        part["config"].update(seeds=[int(seed)], out=str(tmp_path / seed))
        for name in part["config"]["schedules"]:
            for which in ("seeds", "best", "val"):
                part[name][which] = {seed: part[name][which][seed]}
        part["config"]["completed"] = {name: [int(seed)] for name in part["config"]["schedules"]}
        (tmp_path / seed).mkdir()
        (tmp_path / seed / "results.json").write_text(json.dumps(part))
    merged = compare.merge_results([str(tmp_path / "0"), str(tmp_path / "1")], tmp_path / "merged", "cmd")
    assert merged["config"]["seeds"] == [0, 1] and merged["config"]["command"] == "cmd"
    assert [m["seeds"] for m in merged["config"]["merged_from"]] == [[0], [1]]
    for name in ("constant", "monotonic", "cyclical"):
        assert merged[name]["mean"] == pytest.approx(saved[name]["mean"])
        assert merged[name]["best_std"] == pytest.approx(saved[name]["best_std"])
    assert merged["comparison"] == json.loads(json.dumps(saved["comparison"]))
    other = json.loads((tmp_path / "1" / "results.json").read_text())
    other["config"]["period"] = 7
    (tmp_path / "1" / "results.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="`period` differs"):
        compare.merge_results([str(tmp_path / "0"), str(tmp_path / "1")], tmp_path / "merged2")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--steps", "1500", "--period", "1000"], "ends cyclical's last cycle of --period 1000 while beta still rises"),
        (["--steps", "1000", "--monotonic-steps", "2000"], "--monotonic-steps 2000 must be at most --steps 1000"),
        (["--period", "1"], "--period must be an int >= 2, got 1"),
        (["--seeds", "1", "1"], "--seeds must be distinct"),
        (["--jobs", "0"], "--jobs must be a positive int, got 0"),
        (["--bow-weight", "-1"], "--bow-weight must be >= 0"),
        (["--bn-gamma", "-0.5"], "--bn-gamma must be a finite number >= 0"),
    ],
)
def test_compare_rejects_bad_settings_before_training(argv: list[str], match: str, capsys) -> None:
    with pytest.raises(SystemExit):
        compare.parse_args(argv)
    assert match in capsys.readouterr().err


def test_compare_runs_that_end_on_a_plateau_are_accepted() -> None:
    assert compare.parse_args(["--steps", "1700", "--period", "1000"]).steps == 1700  # 700 >= 2/3 of 1000
    assert compare.parse_args(["--steps", "2000", "--period", "1000"]).period == 1000
    args = compare.parse_args(["--table", "paper"])
    assert compare.lr_restarts("cyclical", args) == {"lr_restart_cycles": 0, "lr_restart_period": args.period}
    assert compare.lr_restarts("monotonic", args) == {"lr_restart_cycles": 0, "lr_restart_period": None}
    args = compare.parse_args(["--lr-policy", "restart"])
    assert compare.lr_restarts("monotonic", args) == {"lr_restart_cycles": 1, "lr_restart_period": None}


def test_std_is_the_sample_std() -> None:
    assert compare.mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    assert compare.mean_std([5.0]) == (5.0, 0.0)


# ------------------------------------------------------------------------------------------ real data
def test_real_data_defaults_come_from_the_data(tmp_path) -> None:
    # 20 dialogs; "common" words cover most tokens, each "rareN" occurs once.
    lines = [f"hello there common common common __eou__ common words common rare{i} __eou__\n" for i in range(20)]
    for split in ("train", "validation", "test"):
        (tmp_path / f"dialogues_{split}.txt").write_text("".join(lines))
    dm = DialogDataModule(data_dir=str(tmp_path), num_valid=5, num_test=3)
    assert dm.min_freq == 2 and "rare3" not in dm.vocab.stoi  # seen once: <unk>
    # Counts over the 20 pairs: common 100, hello/there/words 20 each, 20 rare words once: 180 tokens. The 4
    # frequent words cover 160 (89%); reaching 95% (171) takes 11 rare ones: 15 words + the 4 specials.
    assert dm.max_vocab == 15 + 4
    assert dm.max_len == 10  # the 90th percentile (5 + <eos>) clipped to at least 10
    assert len(dm.splits["valid"]) == 5 and len(dm.splits["test"]) == 3  # evaluation capped, spread evenly
    explicit = DialogDataModule(data_dir=str(tmp_path), min_freq=1, max_vocab=None, max_len=7)
    assert explicit.min_freq == 1 and explicit.max_len == 7
    builtin = DialogDataModule(num_train=10, num_valid=2, num_test=2)
    assert (builtin.min_freq, builtin.max_len, builtin.max_vocab) == (1, 40, None)
    with pytest.raises(ValueError, match="max_len"):
        DialogDataModule(max_len=1)


def test_prepare_chitchat_writes_dailydialog_files(tmp_path) -> None:
    from examples.dialog_cvae import prepare_chitchat

    convs = {
        f"c{i}": {"messages": [[{"text": f"hi {i}"}, {"text": "how are you?"}], [{"text": "fine __eou__ thanks"}]]}
        for i in range(5)
    }
    (tmp_path / "dataset.json").write_text(json.dumps(convs))
    prepare_chitchat.main(
        [
            "--json",
            str(tmp_path / "dataset.json"),
            "--out",
            str(tmp_path / "out"),
            "--train",
            "3",
            "--valid",
            "1",
            "--test",
            "1",
        ]
    )
    splits = read_data_dir(tmp_path / "out")
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [3, 1, 1]
    assert splits["train"][0].response == "fine thanks" and splits["train"][0].context[0].endswith("how are you ?")
    train_ctx = {ex.context for ex in splits["train"]}
    assert all(ex.context not in train_ctx for ex in splits["test"])
    with pytest.raises(SystemExit):
        prepare_chitchat.main(["--json", str(tmp_path / "dataset.json"), "--out", str(tmp_path / "x"), "--train", "9"])


# ------------------------------------------------------------------------------------------ README vs results
_GENERATED = re.compile(
    r"<!-- generated from (?P<file>\S+) by (?P<func>\w+\.\w+) -->\n(?P<body>.*?)\n<!-- end -->", re.DOTALL
)


def _generated_blocks(readme: Path) -> list[re.Match]:
    return list(_GENERATED.finditer(readme.read_text()))


@pytest.mark.parametrize("readme", ["examples/dialog_cvae/README.md", "docs/examples.md"])
def test_readme_tables_are_generated_from_the_committed_results(readme: str) -> None:
    """Every results table of the dialog example sits between markers naming its JSON and generator; a cell that
    disagrees with its file fails here. The example's README must hold the probe's and the comparison's."""
    from examples.dialog_cvae import probe

    root = Path(__file__).resolve().parents[1]
    generators = {"probe.probe_table": probe.probe_table, "compare.readme_tables": compare.readme_tables}
    blocks = _generated_blocks(root / readme)
    for block in blocks:
        saved = json.loads((EXAMPLE_DIR / block["file"]).read_text())
        assert block["body"] == generators[block["func"]](saved), f"{readme}: table from {block['file']} is stale"
        config = saved["config"]
        assert {"steps", "seeds", "command", "commit"} <= set(config) and config["command"]
        commit = config["commit"].removesuffix("+dirty")
        assert re.fullmatch("[0-9a-f]{40}", commit), config["commit"]
        git = subprocess.run(
            ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root, capture_output=True, check=False
        )
        assert git.returncode == 0, f"{block['file']}: commit {commit} is not in this repository's history"
    if readme.startswith("examples"):
        assert {b["func"] for b in blocks} >= {"probe.probe_table"}


def test_provenance_commit_ignores_documentation_edits(tmp_path) -> None:
    from examples import _runs  # the shared provenance of both examples' results

    assert re.fullmatch("[0-9a-f]{40}(\\+dirty)?", _runs.git_commit())
    assert _runs._CODE == ("*.py", "*.yaml", "*.toml")


def test_readme_table_generator_detects_a_changed_cell(tmp_path) -> None:
    results = json.loads((EXAMPLE_DIR / "figures" / "probe_low_beta.json").read_text())
    from examples.dialog_cvae import probe

    table = probe.probe_table(results)
    results["runs"][0]["val_kl_end"] += 0.01
    assert probe.probe_table(results) != table
