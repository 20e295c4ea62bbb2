"""Fast tests of the text VAE example (examples/text_vae): formulas, data, model, entry points."""

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

import examples._runs as runs_module
import examples.text_vae.compare as compare_module
from examples._runs import ProgressBoard, resolve_jobs
from examples.text_vae.compare import Config, compare, parse_args, schedules
from examples.text_vae.corpus import FACTORS, N_VALUES, generate_corpus, write_corpus
from examples.text_vae.corpus_stats import STATS_PATH, measure
from examples.text_vae.data import (
    BucketedBatches,
    EncodedSplit,
    ShardSampler,
    TextVAEDataModule,
    Vocab,
    padding_fraction,
    read_ptb,
    read_sentences,
    training_subset,
)
from examples.text_vae.metrics import linear_probe_accuracy, perplexity
from examples.text_vae.model import TextVAE
from examples.text_vae.train import main as train_main
from lightning_kl_anneal import (
    BatchNormPosterior,
    CyclicalKLAnnealing,
    LatentMonitor,
    MisconfigurationException,
    active_units,
    gaussian_kl,
    mutual_information,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = {"emb_dim": 8, "hidden_dim": 8, "latent_dim": 2}


def write_ptb(directory: Path, lines: dict[str, list[str]] | None = None) -> Path:
    lines = lines or {
        "train": ["the cat sat", "a dog ran home", "the dog sat", "a cat ran"],
        "valid": ["the cat ran", "a dog sat"],
        "test": ["the bird sat", "a cat sat home"],
    }
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        (directory / f"ptb.{split}.txt").write_text("".join(r + "\n" for r in rows))
    return directory


# ----------------------------------------------------------------------------- metrics


def test_perplexity_counts_kl_and_eos() -> None:
    # two sentences of 2 words + <eos> = 6 tokens, NLL 3 + 5, KL 1 + 0
    assert perplexity(8.0, 1.0, 6) == pytest.approx(math.exp(9.0 / 6))
    with pytest.raises(ValueError, match="`n_tokens` must be positive"):
        perplexity(1.0, 0.0, 0)


def test_model_elbo_and_ppl_match_hand_computed_sums() -> None:
    """The logged ELBO/PPL are the paper's definitions of the per-sentence sums the model accumulates."""
    m = TextVAE.eval_metrics(rec_sum=30.0, kl_per_example=2.0, n=3, tokens=12)
    assert m["rec"] == pytest.approx(10.0) and m["kl"] == pytest.approx(2.0)
    assert m["elbo"] == pytest.approx(-12.0)
    assert m["ppl"] == pytest.approx(math.exp(36.0 / 12.0))


def test_model_evaluation_equals_a_direct_computation() -> None:
    """validate() over several batches = one pass computing the same sums with the library's functions."""
    dm = TextVAEDataModule(corpus_size=50, batch_size=2)
    torch.manual_seed(0)
    model = TextVAE(vocab_size=dm.vocab_size, **TINY)
    _deterministic_posterior(model)
    got = _eval_metrics(model, dm, 1, "val")
    split = dm.split("valid")
    model.eval()
    with torch.no_grad():
        out = model(split.tokens, split.lengths)
    kl = gaussian_kl(out["mu"], out["logvar"]).sum(1)
    assert got["val/rec"] == pytest.approx(float(out["rec"].mean()), rel=1e-5)
    assert got["val/kl"] == pytest.approx(float(kl.mean()), rel=1e-5)
    assert got["val/ppl"] == pytest.approx(
        math.exp(float(out["rec"].sum() + kl.sum()) / float(split.lengths.sum())), rel=1e-5
    )
    assert got["val/au"] == active_units(out["mu"])
    assert got["val/mi"] == pytest.approx(
        mutual_information(out["mu"], out["logvar"], generator=torch.Generator().manual_seed(0)), abs=1e-6
    )


def test_linear_probe_reads_separable_codes_only() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (300,), generator=g)
    z_info = torch.nn.functional.one_hot(y, 3).float() * 5 + torch.randn(300, 3, generator=g) * 0.1
    assert linear_probe_accuracy(z_info[:200], y[:200], z_info[200:], y[200:]) > 0.95
    z_noise = torch.randn(300, 3, generator=g)
    assert linear_probe_accuracy(z_noise[:200], y[:200], z_noise[200:], y[200:]) < 0.6


# ----------------------------------------------------------------------------- corpus and data


def test_corpus_deterministic_and_splits_disjoint() -> None:
    a, b = generate_corpus(300, 50, 50, seed=3), generate_corpus(300, 50, 50, seed=3)
    assert a["train"].sentences == b["train"].sentences and a["test"].labels == b["test"].labels
    assert generate_corpus(300, 50, 50, seed=4)["train"].sentences != a["train"].sentences
    sets = {k: {tuple(s) for s in v.sentences} for k, v in a.items()}
    assert len(sets["train"]) == 300  # no duplicate inside a split either
    assert (
        not (sets["train"] & sets["valid"])
        and not (sets["train"] & sets["test"])
        and not (sets["valid"] & sets["test"])
    )
    assert all(len(lab) == len(FACTORS) for lab in a["train"].labels)
    # the length class is the number of clauses: longer classes really are longer
    by_class = [[len(s) for s, lab in zip(a["train"].sentences, a["train"].labels) if lab[3] == c] for c in range(3)]
    means = [sum(x) / len(x) for x in by_class]
    assert means[0] < means[1] < means[2]
    with pytest.raises(ValueError, match="`n_train` must be a positive int"):
        generate_corpus(0)


def test_corpus_matches_its_published_stats() -> None:
    """figures/corpus_stats.json is what the corpus measures today, and it holds >= 6 nats per sentence."""
    published = json.loads(STATS_PATH.read_text())
    measured = measure(generate_corpus(10_000, 1_000, 1_000, seed=0))
    assert published["sentence_information_nats"] >= 6.0  # the floor, as a lower bound on I(factors; x)
    assert measured["sentence_information_nats"] == pytest.approx(published["sentence_information_nats"], abs=2e-3)
    assert measured["factor_entropy_nats"] == pytest.approx(math.log(8 * 2 * 3 * 3 * 4 * 2), abs=1e-3)
    for key in ("sentences", "tokens_per_sentence_with_eos", "vocabulary_train"):
        assert measured[key] == published[key], key
    assert list(measured["factors"]) == list(FACTORS) == list(published["factors"])
    for name, pub in published["factors"].items():
        got = measured["factors"][name]
        assert got["values"] == pub["values"] and got["words_per_sentence"] == pub["words_per_sentence"], name
        for key in ("bow_test_accuracy", "bow_test_cross_entropy_nats", "information_lower_bound_nats"):
            assert got[key] == pytest.approx(pub[key], abs=2e-3), (name, key)
        # every factor is said in more than one word on average, not in one place only
        assert pub["words_per_sentence"] > 1.3 and pub["information_lower_bound_nats"] > 0.3, name


def test_corpus_factors_are_expressed_where_the_grammar_says() -> None:
    split = generate_corpus(400, 5, 5, seed=2)["train"]
    conj = {"and", "while", "because", "so"}
    for words, lab, expr in zip(split.sentences, split.labels, split.expressions):
        assert sum(w in conj for w in words) == lab[FACTORS.index("length")] == expr[FACTORS.index("length")] - 1
        if lab[FACTORS.index("tense")] == 2:  # future: every clause's verb is "will <base>"
            assert words.count("will") == lab[FACTORS.index("length")] + 1
    # the factors are drawn uniformly and independently: every value of every factor occurs
    for j, name in enumerate(FACTORS):
        assert {lab[j] for lab in split.labels} == set(range(N_VALUES[j])), name


def test_write_corpus_round_trips_through_reader(tmp_path: Path) -> None:
    write_corpus(tmp_path, seed=1, n_train=30, n_valid=5, n_test=5)
    data = read_ptb(tmp_path)
    assert data["train"] == generate_corpus(30, 5, 5, seed=1)["train"].sentences


def test_reader_and_vocab_on_small_files(tmp_path: Path) -> None:
    data = read_ptb(write_ptb(tmp_path))
    assert data["train"][1] == ["a", "dog", "ran", "home"]
    vocab = Vocab.build(data["train"], max_size=7)  # 4 specials + 3 most frequent words
    assert len(vocab) == 7 and vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert vocab.encode(["bird"]) == [vocab.stoi["<unk>"]]
    split = EncodedSplit(data["test"], vocab)
    assert split.tokens.shape == (2, 5) and split.lengths.tolist() == [4, 5]  # <eos> counted
    assert split.tokens[0, 3] == vocab.stoi["<eos>"] and split.tokens[0, 4] == 0  # then padding


def test_reader_maps_ptb_unk_to_vocab_unk(tmp_path: Path) -> None:
    vocab = Vocab.build([["a", "<unk>", "b"]], max_size=10)
    assert "<unk>" not in vocab.itos[4:]  # not a second <unk> entry
    assert vocab.encode(["<unk>"]) == [3]


@pytest.mark.parametrize(
    ("setup", "error", "match"),
    [
        (lambda d: (d / "ptb.test.txt").unlink(), FileNotFoundError, r"lacks \['ptb.test.txt'\]"),
        (lambda d: (d / "ptb.valid.txt").write_text("\n  \n"), ValueError, "no usable sentence"),
        (
            lambda d: (d / "ptb.train.txt").write_bytes(b"the cat\nbad \xff\xfe byte\n"),
            ValueError,
            r"ptb.train.txt:2: bytes that are not UTF-8.*on_bad_line='skip'",
        ),
    ],
    ids=["missing-file", "empty-file", "undecodable"],
)
def test_reader_errors(tmp_path: Path, setup, error: type[Exception], match: str) -> None:
    d = write_ptb(tmp_path)
    setup(d)
    with pytest.raises(error, match=match):
        read_ptb(d)


def test_reader_missing_dir_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        read_ptb(tmp_path / "nope")
    with pytest.raises(ValueError, match="`on_bad_line` must be 'error' or 'skip', got 'ignore'"):
        read_sentences(write_ptb(tmp_path) / "ptb.train.txt", on_bad_line="ignore")  # type: ignore[arg-type]


def test_reader_skips_and_reports_long_and_undecodable_lines(tmp_path: Path) -> None:
    path = tmp_path / "ptb.train.txt"
    path.write_bytes(b"ok line\n" + b"w " * 50 + b"\n\xff\xfe\n\nanother ok\n" + b"x" * 200_000 + b"\n")
    sentences, skipped = read_sentences(path, max_len=10, on_bad_line="skip")
    assert sentences == [["ok", "line"], ["another", "ok"]]
    assert skipped == {"blank": 1, "too_long": 2, "undecodable": 1}
    d = write_ptb(tmp_path / "d")
    (d / "ptb.train.txt").write_text("the cat sat\n" + "w " * 500 + "\n")
    with pytest.warns(UserWarning, match=r"ptb.train.txt: skipped \{'too_long': 1\}"):
        read_ptb(d, max_len=100)


def test_bucketing_has_little_padding_and_covers_every_sentence() -> None:
    dm = TextVAEDataModule(corpus_size=2000, batch_size=32)
    batches = BucketedBatches(dm.split("train"), 32)
    assert sorted(torch.cat(batches.index).tolist()) == list(range(len(dm.split("train"))))
    assert padding_fraction(batches) < 0.02
    b = batches[0]
    assert b["tokens"].shape[1] == int(b["lengths"].max()) and b["labels"].shape == (len(b["lengths"]), len(FACTORS))


def test_datamodule_from_dir_and_bad_args(tmp_path: Path) -> None:
    dm = TextVAEDataModule(data_dir=str(write_ptb(tmp_path)), batch_size=2)
    assert dm.vocab_size == 4 + 6 and dm.factor_names == ()  # "home" is seen once: below min_count=2
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"tokens", "lengths"}
    with pytest.raises(ValueError, match="`batch_size` must be a positive int, got 0"):
        TextVAEDataModule(batch_size=0)


def test_vocab_min_count_and_cap() -> None:
    sentences = [["a", "b", "a"], ["c", "a", "b"], ["d"]]
    assert Vocab.build(sentences, min_count=2).itos[4:] == ["a", "b"]
    assert Vocab.build(sentences, min_count=1).itos[4:] == ["a", "b", "c", "d"]
    assert Vocab.build(sentences, max_size=5, min_count=1).itos[4:] == ["a"]
    with pytest.raises(ValueError, match="`min_count` must be a positive int, got 0"):
        Vocab.build(sentences, min_count=0)


def test_training_subset_is_seeded_and_caps_length() -> None:
    lengths = list(range(1, 201))  # 1..200
    keep, cap = training_subset(lengths)
    assert cap == 198 and keep == list(range(198))  # the 99th percentile of 200 lengths is the 198th
    a, _ = training_subset(lengths, n=50, max_len=1000, seed=3)
    assert (
        a
        == training_subset(lengths, n=50, max_len=1000, seed=3)[0]
        != training_subset(lengths, n=50, max_len=1000, seed=4)[0]
    )
    assert len(a) == 50 and a == sorted(a) and len(set(a)) == 50
    assert training_subset(lengths, n=50, max_len=20, seed=3)[0] == [i for i in a if lengths[i] <= 20]
    assert training_subset(lengths, n=200, max_len=1000)[0] == list(range(200))  # n = size: everything


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, r"`train_sentences` must be an int in \[1, 5\] .* got 0"),
        ({"n": 6}, r"`train_sentences` must be an int in \[1, 5\] .* got 6"),
        ({"max_len": 0}, r"`max_train_len` must be a positive int or None .* got 0"),
    ],
)
def test_training_subset_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        training_subset([1, 2, 3, 4, 5], **kwargs)


def test_datamodule_train_sentences_subsample_from_dir(tmp_path: Path) -> None:
    train = [f"w{i % 7} w{i % 3} x" for i in range(40)] + ["rare word only once"]
    d = write_ptb(tmp_path, {"train": train, "valid": ["w1 w2 x", "rare x"], "test": ["w0 x"]})
    full = TextVAEDataModule(data_dir=str(d), batch_size=4)
    assert full.vocab_size == 4 + 7 + 1  # w0..w6 and x; the once-seen words become <unk>
    sub = TextVAEDataModule(data_dir=str(d), batch_size=4, train_sentences=10, max_train_len=50)
    sub2 = TextVAEDataModule(data_dir=str(d), batch_size=4, train_sentences=10, max_train_len=50, seed=5)
    assert len(sub.split("train")) == 10 and len(sub.split("valid")) == 2  # evaluation splits stay whole
    torch.testing.assert_close(sub.split("train").tokens, sub2.split("train").tokens)  # model seed: same data
    assert sub.stats["valid_unk"] > 0 and "10 (of 41) train / 2 valid / 1 test" in sub.describe()
    with pytest.raises(ValueError, match="`train_sentences` must be a positive int or None"):
        TextVAEDataModule(train_sentences=0)
    with pytest.raises(ValueError, match=r"`train_sentences` must be an int in \[1, 41\]"):
        TextVAEDataModule(data_dir=str(d), train_sentences=100).setup("fit")


# ----------------------------------------------------------------------------- model


def test_model_shapes_and_loss_on_tiny_batch() -> None:
    torch.manual_seed(0)
    model = TextVAE(vocab_size=12, **TINY)
    tokens = torch.tensor([[5, 6, 7, 2], [8, 2, 0, 0]])  # second sentence padded
    lengths = torch.tensor([4, 2])
    mu, logvar = model.encode(tokens, lengths)
    assert mu.shape == logvar.shape == (2, 2)
    assert model.decode(tokens, mu).shape == (2, 4, 12)
    out = model(tokens, lengths)
    assert out["rec"].shape == (2,) and out["kl_dim"].shape == (2, 2)
    # padding is neither read by the encoder nor scored by the decoder
    mu_short, _ = model.encode(tokens[1:, :2], lengths[1:])
    torch.testing.assert_close(mu_short, mu[1:])
    model.eval()
    torch.manual_seed(1)
    rec_padded = model(tokens[1:], lengths[1:])["rec"]
    torch.manual_seed(1)
    torch.testing.assert_close(model(tokens[1:, :2], lengths[1:])["rec"], rec_padded)
    # loss = rec + beta * kl with the raw KL logged separately
    model.beta = 0.25
    batch = {"tokens": tokens, "lengths": lengths}
    torch.manual_seed(2)
    loss, metrics, _ = model._shared_step(batch, "train")
    torch.testing.assert_close(loss, metrics["rec"] + 0.25 * metrics["kl"])
    loss.backward()
    assert model.enc_emb.weight.grad is not None  # the KL and the sample reach the encoder


def test_model_free_bits_changes_training_objective_only() -> None:
    model = TextVAE(vocab_size=12, free_bits=10.0, **TINY)
    model.beta = 1.0
    batch = {"tokens": torch.tensor([[5, 6, 2]]), "lengths": torch.tensor([3])}
    loss, metrics, _ = model._shared_step(batch, "train")
    torch.testing.assert_close(loss, metrics["rec"] + 2 * 10.0)  # floor of 10 nats in each of 2 dims
    assert metrics["kl"] < 10.0  # the raw KL is what gets reported


@pytest.mark.parametrize("mode", ["h0", "h0c0"])
def test_decoder_initial_state_from_z(mode: str) -> None:
    """``h0``: z -> h0 and c0 = 0 (the paper's code); ``h0c0``: z -> both."""
    torch.manual_seed(0)
    model = TextVAE(vocab_size=12, dec_init=mode, **TINY)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    z = torch.randn(3, TINY["latent_dim"])
    model.decode(torch.tensor([[5, 6, 2]] * 3), z)
    (h0, c0), state = seen[0], model.to_state(z)
    if mode == "h0":
        torch.testing.assert_close(h0[0], state)
        assert c0.abs().max() == 0
    else:
        torch.testing.assert_close(torch.cat([h0[0], c0[0]], dim=1), state)
        assert c0.abs().max() > 0


def test_bn_gamma_batch_normalises_mu_keeps_the_other_weights_and_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    plain = TextVAE(vocab_size=12, **TINY)
    torch.manual_seed(0)
    model = TextVAE(vocab_size=12, bn_gamma=0.5, **TINY)
    assert plain.mu_norm is None and TextVAE(vocab_size=12, bn_gamma=0.0, **TINY).mu_norm is None  # None, 0: off
    assert isinstance(model.mu_norm, BatchNormPosterior)
    for key, value in plain.state_dict().items():  # drawn as without BN: same seed, same starting weights
        torch.testing.assert_close(model.state_dict()[key], value)
    tokens, lengths = torch.randint(4, 12, (16, 5)), torch.full((16,), 5)
    mu, logvar = model.encode(tokens, lengths)
    raw_mu, raw_logvar = plain.encode(tokens, lengths)
    torch.testing.assert_close(logvar, raw_logvar)  # only the mean goes through it
    torch.testing.assert_close(mu, model.mu_norm(raw_mu))
    assert not torch.allclose(mu, raw_mu)
    dm = TextVAEDataModule(corpus_size=64, batch_size=16)
    model = TextVAE(vocab_size=dm.vocab_size, bn_gamma=0.5, **TINY)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(model, dm)
    assert trainer.global_step == 4 and math.isfinite(model.last_eval["elbo"])
    assert model.hparams.bn_gamma == 0.5  # so that a checkpoint rebuilds the module
    monkeypatch.setattr(sys, "argv", ["train.py"])  # pytest's own arguments are not the CLI's
    cli = train_main(["--model.bn_gamma", "0.5", "--data.corpus_size", "64", *(f"--model.{k}={v}" for k, v in TINY.items())],
                     run=False)  # fmt: skip
    assert isinstance(cli.model.mu_norm, BatchNormPosterior)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vocab_size": 0}, "`vocab_size` must be a positive int, got 0"),
        ({"bn_gamma": -0.5}, "`bn_gamma` must be None or a finite number >= 0"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\), got 1.0"),
        ({"free_bits": -0.1}, "`free_bits` must be >= 0"),
        ({"lr_restart_cycles": -1}, "`lr_restart_cycles` must be an int >= 0"),
        ({"dec_init": "c0"}, "`dec_init` must be 'h0' .* or 'h0c0' .*, got 'c0'"),
    ],
)
def test_model_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TextVAE(**{"vocab_size": 12, **kwargs})


def test_training_sees_scheduled_beta_and_evaluates_at_one(tmp_path: Path) -> None:
    seen: dict[str, list[float]] = {"train": [], "val": [], "lr": []}

    class Spy(TextVAE):
        def _shared_step(self, batch, stage):  # type: ignore[override]
            seen["train" if stage == "train" else "val"].append(float(self.beta))
            if stage == "train":
                seen["lr"].append(self.optimizers().param_groups[0]["lr"])
            return super()._shared_step(batch, stage)

    dm = TextVAEDataModule(corpus_size=64, batch_size=16)
    model = Spy(vocab_size=dm.vocab_size, lr_restart_cycles=2, **TINY)
    trainer = L.Trainer(
        max_epochs=2,
        callbacks=[CyclicalKLAnnealing(n_cycle=2, ratio=0.5)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    assert seen["train"] == [0.0, 0.5, 1.0, 1.0] * 2  # T = 8 steps, 2 cycles
    assert set(seen["val"]) == {1.0}
    assert math.isfinite(trainer.callback_metrics["val/elbo"]) and "val/mi" in trainer.callback_metrics
    # the optional cosine lr restarts with every beta cycle (steps 0 and 4): torch's warm restarts, T_0 = 8 / 2
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts) and scheduler.T_0 == 4
    expected = [0.5 * (1 + math.cos(math.pi * tau)) for tau in (0.0, 0.25, 0.5, 0.75)] * 2  # the former formula
    hand = [1.0, 0.8535534, 0.5, 0.1464466] * 2  # (1 + cos(pi t / 4)) / 2, by hand
    assert seen["lr"] == pytest.approx([1e-3 * f for f in expected]) == [1e-3 * f for f in hand]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_sampler_gives_every_item_once(world: int) -> None:
    for n in range(1, 8):
        shards = [list(ShardSampler(range(n), num_replicas=world, rank=r)) for r in range(world)]
        assert sorted(i for shard in shards for i in shard) == list(range(n))
        assert [len(ShardSampler(range(n), num_replicas=world, rank=r)) for r in range(world)] == [
            len(sh) for sh in shards
        ]


def _deterministic_posterior(model: TextVAE) -> None:
    """logvar = -30 (std 3e-7): z = mu, so evaluation has no sampling noise to differ between runs."""
    with torch.no_grad():
        model.to_posterior.weight[TINY["latent_dim"] :] = 0.0
        model.to_posterior.bias[TINY["latent_dim"] :] = -30.0


def _eval_metrics(model: TextVAE, dm: TextVAEDataModule, devices: int, stage: str) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    run = trainer.validate if stage == "val" else trainer.test
    return {k: float(v) for k, v in run(model, dm, verbose=False)[0].items()}


def test_ddp_evaluation_counts_every_sentence_once() -> None:
    """2 ddp_spawn processes report the numbers of 1 process, on splits whose batches do not divide evenly."""
    dm = TextVAEDataModule(corpus_size=50, batch_size=2)  # valid and test: 5 sentences in 3 batches
    assert len(BucketedBatches(dm.split("valid"), 2)) == 3  # Lightning's DistributedSampler would repeat one
    torch.manual_seed(0)
    model = TextVAE(vocab_size=dm.vocab_size, **TINY)
    _deterministic_posterior(model)
    # validation only: test batches come from the same loader code, and each spawn costs seconds
    one, two = _eval_metrics(model, dm, 1, "val"), _eval_metrics(model, dm, 2, "val")
    assert set(one) == set(two) == {f"val/{k}" for k in ("rec", "kl", "elbo", "ppl", "au", "mi")}
    assert two == pytest.approx(one, rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- entry points


def test_train_cli_fast_dev_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py"])  # pytest's own arguments are not the CLI's
    seen: list[float] = []  # β in each training step: the callback given on the command line writes it
    step = TextVAE.training_step
    monkeypatch.setattr(
        TextVAE, "training_step", lambda self, *a, **k: seen.append(float(self.beta)) or step(self, *a, **k)
    )
    cli = train_main(
        ["fit", "--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path),
         "--data.data_dir", str(write_ptb(tmp_path / "ptb")), "--data.batch_size", "2",
         "--model.emb_dim", "8", "--model.hidden_dim", "8", "--model.latent_dim", "2",
         "--trainer.callbacks+=lightning_kl_anneal.CyclicalKLAnnealing", "--trainer.callbacks.n_cycle", "2"]
    )  # fmt: skip
    assert cli.model.hparams.vocab_size == 10  # linked from the data
    assert any(isinstance(cb, CyclicalKLAnnealing) and cb.n_cycle == 2 for cb in cli.trainer.callbacks)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1  # fast_dev_run: one training step ran
    assert cli.model.hparams.beta == 1.0 and seen == [0.0]  # the model's own β is 1; the schedule's start is 0
    assert math.isfinite(cli.trainer.callback_metrics["val/elbo"])  # and one validation batch


def test_compare_tiny_budget_writes_results_and_figures(tmp_path: Path) -> None:
    # --jobs 1: a worker's start-up (about 5 s of imports) outweighs these runs; --jobs has its own tests below
    cfg = parse_args(
        ["--out", str(tmp_path), "--seeds", "0", "1", "--max-epochs", "2", "--n-cycle", "2", "--corpus-size", "120",
         "--emb-dim", "8", "--hidden-dim", "8", "--latent-dim", "2", "--free-bits", "0.5", "--lr-restart", "--delay", "2",
         "--probe-size", "60", "--threads", "1", "--jobs", "1"]
    )  # fmt: skip
    threads = torch.get_num_threads()
    try:
        results = compare(cfg)
    finally:
        torch.set_num_threads(threads)  # compare() sets it process-wide; the other tests keep theirs
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk.pop("config")["steps"] == 8  # 2 epochs x 4 batches
    assert list(on_disk) == ["constant", "monotonic", "cyclical", "cyclical+fb", "cyclical+lr", "delay+cyclical"]
    for row in on_disk.values():
        assert set(row["per_seed"]) == {"0", "1"}
        for key in ("rec", "kl", "elbo", "ppl", "au", "mi", "probe_topic"):
            assert math.isfinite(row["mean"][key])
            assert row["mean"][key] == pytest.approx((row["per_seed"]["0"][key] + row["per_seed"]["1"][key]) / 2)
        assert row["mean"]["elbo"] == pytest.approx(-(row["mean"]["rec"] + row["mean"]["kl"]))
    assert results["constant"]["mean"] == on_disk["constant"]["mean"]
    kl = {name: [on_disk[name]["per_seed"][s]["kl"] for s in ("0", "1")] for name in on_disk}
    assert on_disk["monotonic"]["std"]["kl"] == pytest.approx(
        abs(kl["monotonic"][0] - kl["monotonic"][1]) / math.sqrt(2)
    )  # ddof=1
    paired = on_disk["cyclical"]["paired"]
    assert paired["per_seed"] == pytest.approx(
        {s: c - m for s, c, m in zip(("0", "1"), kl["cyclical"], kl["monotonic"])}
    )
    assert (
        paired["greater"] == sum(c > m for c, m in zip(kl["cyclical"], kl["monotonic"]))
        and "paired" not in on_disk["constant"]
    )
    assert (tmp_path / "logs" / "lightning.log").read_text().count("GPU available") == 12  # banners kept in the log
    for row in on_disk.values():  # LatentMonitor ran in every run; 2 epochs x 4 batches
        assert set(row["alert"]) == {"0", "1"} and all(
            a["steps"] == 8 and a["steps_per_epoch"] == 4 for a in row["alert"].values()
        )
    for fig in ("curves.png", "latent.png"):
        assert (tmp_path / fig).stat().st_size > 1000


def test_compare_persistence_phase_holds_beta_at_one_for_every_row(tmp_path: Path) -> None:
    """--persist-epochs: the schedule spans --max-epochs, then every row trains at beta = 1; both phases are tested."""
    cfg = parse_args(
        ["--out", str(tmp_path), "--seeds", "0", "1", "--rows", "monotonic", "cyclical", "--max-epochs", "2",
         "--persist-epochs", "1", "--n-cycle", "2", "--corpus-size", "120", "--emb-dim", "8", "--hidden-dim", "8",
         "--latent-dim", "2", "--probe-size", "60", "--threads", "1", "--jobs", "1"]
    )  # fmt: skip
    seen = {}
    for name, row in schedules(cfg).items():
        res = compare_module.run_one(cfg, name, row, 0)
        seen[name] = {step: beta for step, beta, _, _ in res["curve"]}  # global step after the step -> its beta
        assert res["metrics"]["step"] <= 8 < res["persist_metrics"]["step"] <= 12
    assert sorted(seen["cyclical"]) == list(range(1, 13))
    # T = 8 steps (2 epochs x 4 batches): cyclical restarts at step 4 (beta 0.1), both rows hold 1 on steps 8..11
    assert seen["cyclical"][5] == pytest.approx(0.1) and seen["monotonic"][5] == pytest.approx(1.0)
    for name in ("monotonic", "cyclical"):
        assert [seen[name][s] for s in range(9, 13)] == [1.0] * 4, name
    threads = torch.get_num_threads()
    try:
        compare(cfg)
    finally:
        torch.set_num_threads(threads)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    block = on_disk["config"]
    assert (block["steps"], block["schedule_steps"], block["persist_steps"], block["seeds"]) == (12, 8, 4, [0, 1])
    assert (
        block["command"].startswith("python examples/text_vae/compare.py ") and "--persist-epochs 1" in block["command"]
    )
    assert parse_args(block["command"].split()[2:]) == cfg  # the command recorded is the command that ran
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", block["commit"])
    for name in ("monotonic", "cyclical"):
        persist = on_disk[name]["persist"]
        assert set(persist["per_seed"]) == {"0", "1"} and all(m["step"] > 8 for m in persist["per_seed"].values())
    diffs = on_disk["cyclical"]["persist"]["paired"]["per_seed"]
    kl = {n: on_disk[n]["persist"]["per_seed"] for n in ("monotonic", "cyclical")}
    assert diffs == pytest.approx({s: kl["cyclical"][s]["kl"] - kl["monotonic"][s]["kl"] for s in ("0", "1")})
    for key in ("paired", "paired_mi", "paired_elbo"):
        p = on_disk["cyclical"][key]
        assert p["sign_test_p"] == compare_module.sign_test_p(list(p["per_seed"].values()))
        lo, hi = p["bootstrap_95"]
        assert min(p["per_seed"].values()) <= lo <= p["mean"] <= hi <= max(p["per_seed"].values())


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [([1, 2, 3, 4, 5], 2 / 32), ([-1, -2, -3, -4, -5], 2 / 32), ([1, 2, 3, 4, -5], 12 / 32), ([1, 0, 0], 1.0),
     ([1, 2, 3, 4, 5, 6, 7, 8, 9, -1], 2 * 11 / 1024), ([], 1.0)],
)  # fmt: skip
def test_sign_test_p_against_hand_computed_binomial_tails(diffs: list[float], expected: float) -> None:
    assert compare_module.sign_test_p(diffs) == pytest.approx(expected)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    d = [0.1, 0.3, 0.2, 0.5, 0.4]
    lo, hi = compare_module.bootstrap_interval(d)
    assert compare_module.bootstrap_interval(d) == [lo, hi] and 0.1 <= lo < 0.3 < hi <= 0.5


def test_compare_rejects_bad_persist_epochs_before_any_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`persist_epochs` must be an int >= 0 .*got -1"):
        compare(Config(out=str(tmp_path), persist_epochs=-1, corpus_size=60, threads=0))
    with pytest.raises(ValueError, match=r"`persist_epochs` > 0 with `lr_restart`"):
        compare(Config(out=str(tmp_path), persist_epochs=1, lr_restart=True, corpus_size=60, threads=0))
    assert not (tmp_path / "results.json").exists()


def test_compare_runs_as_a_script_from_the_repo_root() -> None:
    proc = subprocess.run(
        [sys.executable, "examples/text_vae/compare.py", "--help"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--data-dir" in proc.stdout and "--free-bits" in proc.stdout


def test_compare_rejects_bad_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`seeds` must name at least one seed"):
        compare(Config(out=str(tmp_path), seeds=[]))
    with pytest.raises(ValueError, match=r"`seeds` must not repeat a seed .*, got \[0, 1, 0\]"):
        compare(Config(out=str(tmp_path), seeds=[0, 1, 0]))
    with pytest.raises(ValueError, match="`delay` must be an int >= 0"):
        compare(Config(out=str(tmp_path), delay=-1))
    # 120 sentences / 32 = 4 batches x 1 epoch: a delay of 4 leaves no step for the cycles; the library's callback
    # refuses it before the row's first step (compare.py does not check it again)
    with pytest.raises(MisconfigurationException, match=r"`delay`=4 must be smaller than the run's 4 steps"):
        compare(Config(out=str(tmp_path), delay=4, rows=["delay+cyclical"], corpus_size=120, max_epochs=1, threads=0))
    assert not list((tmp_path / "logs" / "delay+cyclical").rglob("*.csv")) and not (tmp_path / "results.json").exists()


def test_delay_row_is_li_et_al_recipe() -> None:
    """beta = 0 for the delay, then the cyclical row's cycles from 0 over the remaining steps."""
    rows = schedules(Config(delay=5, n_cycle=2, ratio=0.5, start=0.1))
    assert rows["delay+cyclical"]["anneal"] == {"n_cycle": 2, "ratio": 0.5, "start": 0.0, "delay": 5}
    assert "delay+cyclical" not in schedules(Config())
    assert list(schedules(Config(delay=5, rows=["delay+cyclical", "monotonic"]))) == ["delay+cyclical", "monotonic"]
    with pytest.raises(
        ValueError,
        match=r"`rows` must name rows of this configuration, \['constant', 'monotonic', 'cyclical'\], got \['cyclical\+fb'\]",
    ):
        schedules(Config(rows=["cyclical+fb"]))
    cb = CyclicalKLAnnealing(**rows["delay+cyclical"]["anneal"], total_steps=13)
    assert [cb.beta_at(t) for t in range(13)] == pytest.approx([0.0] * 5 + [0.0, 0.5, 1.0, 1.0] * 2)


# ----------------------------------------------------------------------------- compare --jobs


def _tiny_compare(out: Path, jobs: int, *extra: str) -> dict:
    cfg = parse_args(
        ["--out", str(out), "--seeds", "0", "1", "--rows", "monotonic", "cyclical", "--max-epochs", "1", "--corpus-size", "120",
         "--emb-dim", "8", "--hidden-dim", "8", "--latent-dim", "2", "--probe-size", "60", "--threads", "1", "--jobs", str(jobs), *extra]
    )  # fmt: skip
    threads = torch.get_num_threads()
    try:
        return compare(cfg)
    finally:
        torch.set_num_threads(threads)  # compare() sets it process-wide; the other tests keep theirs


def test_compare_jobs_give_identical_results(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """4 runs in this process or in 2 spawned workers: the same numbers and figures, a clean console."""
    one, two = _tiny_compare(tmp_path / "one", 1), _tiny_compare(tmp_path / "two", 2)
    console = "".join(capfd.readouterr())
    on_disk = {j: json.loads((tmp_path / j / "results.json").read_text()) for j in ("one", "two")}
    blocks = {j: on_disk[j].pop("config") for j in ("one", "two")}
    assert {k: v for k, v in blocks["one"].items() if k not in ("command", "jobs_used")} == {
        k: v for k, v in blocks["two"].items() if k not in ("command", "jobs_used")
    }
    assert list(on_disk["one"]) == list(on_disk["two"]) == ["monotonic", "cyclical"]
    for name in ("monotonic", "cyclical"):
        for key in ("per_seed", "mean", "std", "alert"):
            assert on_disk["one"][name][key] == on_disk["two"][name][key], (name, key)  # exactly, not approx
        assert list(on_disk["two"][name]["per_seed"]) == ["0", "1"]  # plan order, whatever order the runs finished in
    assert one["cyclical"]["paired"] == two["cyclical"]["paired"]
    for fig in ("curves.png", "latent.png"):  # seed 0's curves and latents, drawn from the workers' results
        assert (tmp_path / "one" / fig).read_bytes() == (tmp_path / "two" / fig).read_bytes()
    config = {j: json.loads((tmp_path / j / "config.json").read_text()) for j in ("one", "two")}
    assert (config["one"]["jobs"], config["one"]["jobs_used"], config["two"]["jobs"], config["two"]["jobs_used"]) == (
        1,
        1,
        2,
        2,
    )
    # the workers' Lightning banners went to the log, labelled with their run, not to the console
    assert "GPU available" not in console and "Warning" not in console
    log = (tmp_path / "two" / "logs" / "lightning.log").read_text()
    assert log.count("GPU available") == 4
    assert all(f"[{name} seed {s}]" in log for name in ("monotonic", "cyclical") for s in (0, 1))
    assert all(f"[{k}/4] " in console for k in range(1, 5)) and "4 runs in" in console and "2 at a time" in console


def test_compare_worker_error_is_raised_in_the_parent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`dropout` must be in \[0, 1\), got 1.0") as info:
        _tiny_compare(tmp_path, 2, "--dropout", "1.0")  # checked by TextVAE, so in the workers
    assert any("in a worker process (--jobs 2)" in note for note in info.value.__notes__)


def test_progress_board_numbers_lines_in_finishing_order(monkeypatch: pytest.MonkeyPatch) -> None:
    left: list[str] = []  # the lines left on the console (tqdm.write), without the bars' redraws
    monkeypatch.setattr(runs_module.tqdm, "write", lambda s, file=None, end="\n", nolock=False: left.append(s))
    board = ProgressBoard({0: "constant seed 0", 1: "monotonic seed 0", 2: "cyclical seed 0"})
    board.handle(("start", 0, 10))
    board.handle(("start", 1, 10))
    board.handle(("step", 1, 5, {"beta": "0.50"}))
    assert [bar.desc for bar in board.bars.values()] == ["[1/3] constant seed 0: ", "[2/3] monotonic seed 0: "]
    assert board.bars[1].n == 5 and board.bars[1].postfix == "beta=0.50"
    board.handle(("end", 1, 10))  # the second run finishes first: its line is [1/3]
    assert [bar.desc for bar in board.bars.values()] == ["[2/3] constant seed 0: "]
    board.handle(("step", 1, 10, {}))  # a late event of a finished run is ignored
    board.handle(("start", 2, 10))
    board.finish(0, 10)
    board.finish(0, 10)  # once only
    board.finish(2, 10)
    assert [line.split(":")[0] for line in left] == [
        "[1/3] monotonic seed 0",
        "[2/3] constant seed 0",
        "[3/3] cyclical seed 0",
    ]
    assert all("10/10" in line for line in left) and board.bars == {}


@pytest.mark.parametrize(
    ("overrides", "cpus", "runs", "expected"),
    [
        ({}, 2, 9, 2),  # the demo on this 2-core machine
        ({}, 1, 9, 1),
        ({}, 64, 9, 9),  # never more workers than runs
        ({"threads": 2}, 5, 9, 2),  # cores // threads
        ({"threads": 2}, 1, 9, 1),
        ({"threads": 0}, 8, 9, 1),  # torch's default threads already use every core
        ({"devices": 2}, 8, 9, 1),  # DDP
        ({"accelerator": "gpu"}, 8, 9, 1),
        ({"jobs": 1}, 8, 9, 1),
        ({"jobs": 4}, 1, 3, 3),  # explicit: capped at the runs only
    ],
)
def test_resolve_jobs(monkeypatch: pytest.MonkeyPatch, overrides: dict, cpus: int, runs: int, expected: int) -> None:
    monkeypatch.setattr(runs_module, "usable_cpus", lambda: cpus)
    cfg = Config(**overrides)
    assert (
        resolve_jobs(cfg.jobs, runs, threads=cfg.threads, accelerator=cfg.accelerator, devices=cfg.devices) == expected
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            {"jobs": -1},
            r"`jobs` must be an int >= 0 \(runs trained at once; 0 = as many as the CPU cores allow\), got -1",
        ),
        ({"jobs": 1.5}, r"`jobs` must be an int >= 0 .*, got 1.5"),
        ({"jobs": "2"}, r"`jobs` must be an int >= 0 .*, got '2'"),
        ({"jobs": True}, r"`jobs` must be an int >= 0 .*, got True"),
        ({"jobs": 2, "devices": 2}, r"`jobs` must be 0 \(auto\) or 1 with `accelerator='cpu'` and `devices=2`, got 2"),
        ({"jobs": 2, "accelerator": "gpu"}, r"`jobs` must be 0 \(auto\) or 1 with `accelerator='gpu'`"),
    ],
)
def test_compare_rejects_bad_jobs_before_any_run(tmp_path: Path, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compare(
            Config(
                out=str(tmp_path),
                seeds=[0],
                max_steps=2,
                corpus_size=60,
                emb_dim=4,
                hidden_dim=4,
                latent_dim=2,
                **overrides,
            )
        )
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_compare_cli_rejects_bad_jobs(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--jobs", value])
    assert (
        f"`jobs` must be an int >= 0 (runs trained at once; 0 = as many as the CPU cores allow), got '{value}'"
        in capsys.readouterr().err
    )


def test_model_diagnostics_equal_latent_monitor_configured_alike() -> None:
    """The model's val/kl, val/au, val/mi are LatentMonitor's latent/* with the model's MI settings (4 draws, all rows).

    compare.py reports the model's values on the test split, where LatentMonitor (validation only) does not run;
    this pins that the two are one computation, so the table's numbers do not depend on which one reports them.
    """
    dm = TextVAEDataModule(corpus_size=200, batch_size=8)
    torch.manual_seed(0)
    model = TextVAE(vocab_size=dm.vocab_size, **TINY)
    _deterministic_posterior(model)  # separated posteriors: MI near log N, not a sampling-noise zero
    monitor = LatentMonitor(mi_samples=4, mi_outer_rows=None)
    trainer = L.Trainer(callbacks=[monitor], logger=False, enable_progress_bar=False, enable_model_summary=False)
    got = {k: float(v) for k, v in trainer.validate(model, dm, verbose=False)[0].items()}
    assert got["latent/kl"] == pytest.approx(got["val/kl"], rel=1e-12) and got["val/kl"] > 0
    assert got["latent/active_units"] == got["val/au"]
    assert got["latent/mi"] == pytest.approx(got["val/mi"], rel=1e-12) and got["val/mi"] > 1.0
