"""The conditional VAE for dialog response generation (Zhao et al., ACL 2017), as used by Fu et al. (NAACL 2019).

    context c  = GRU over [biGRU(utterance_i); speaker_i] for the last k utterances
    prior      p(z | c)    = N(mu_p, sigma_p)   (an MLP on c)
    posterior  q(z | c, x) = N(mu_q, sigma_q)   (a linear layer on [c; biGRU(x)])
    decoder    p(x | c, z) = GRU initialised from [c; z]
    bag of words           = an MLP on [c; z] that predicts every word of x, ignoring order

    loss = Rec + beta * KL(q || p) + bow_weight * BoW

The bag-of-words term is not weighted by beta (as in the paper): it makes z predictive of the response
words, and so is the CVAE's own defence against KL vanishing. beta lives in ``self.beta`` and is written
by :class:`lightning_kl_anneal.CyclicalKLAnnealing`; evaluation is at beta = 1 (ELBO = -(Rec + KL)).
The KL is the library's :func:`lightning_kl_anneal.gaussian_kl` with the learned prior; ``validation_step``
returns ``mu``, ``logvar``, ``prior_mu`` and ``prior_logvar`` for :class:`lightning_kl_anneal.LatentMonitor`
(``LatentMonitor(prior_mu_key="prior_mu", prior_logvar_key="prior_logvar")``).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torchmetrics import MeanMetric
from typing_extensions import override

from lightning_kl_anneal import BatchNormPosterior, gaussian_kl

from .data import BOS, EOS, PAD
from .metrics import DistinctN, bleu_precision_recall, embedding_similarity, nearest_label

#: Sizes for the built-in corpus: the paper's sizes (the constructor's defaults) are far more than
#: ~170 words of vocabulary need, and would not train in minutes on a CPU.
SMALL_PRESET: dict[str, int] = dict(
    embed_dim=64, utt_hidden=64, ctx_hidden=128, dec_hidden=128, latent_dim=16, prior_hidden=64, bow_hidden=128
)


#: Evaluation metrics averaged per example (losses) or per context (generation), each a torchmetrics
#: ``MeanMetric`` so that the average over several processes weighs every example once.
LOSS_KEYS = ("loss", "rec", "kl", "bow", "elbo")
GEN_KEYS = (
    *(f"bleu{n}_{m}" for n in range(1, 5) for m in ("p", "r", "f1")),
    "emb_avg_p",
    "emb_avg_r",
    "emb_ext_p",
    "emb_ext_r",
    "factor_acc",
    "factor_cov",
)


def example_noise(index: torch.Tensor, shape: tuple[int, ...], salt: int) -> torch.Tensor:
    """Standard normal noise of ``shape`` per example, a function of the example's index only.

    Evaluation draws z this way, so a metric does not depend on the batch an example lands in, on the
    other examples, or on how many processes share the evaluation set.

    >>> a = example_noise(torch.tensor([3, 7]), (2,), salt=1)
    >>> torch.equal(a[1], example_noise(torch.tensor([7]), (2,), salt=1)[0])
    True
    """
    out = torch.empty(len(index), *shape)
    g = torch.Generator()
    for i, idx in enumerate(index.tolist()):
        g.manual_seed(1_000_003 * salt + int(idx))
        out[i] = torch.randn(shape, generator=g)
    return out


def bow_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = PAD) -> torch.Tensor:
    """Bag-of-words NLL per example: -sum over non-pad target words of log softmax(logits)[word].

    Every position of a response is predicted by the same distribution, so word order is ignored.

    Args:
        logits: (B, V) one distribution per response.
        targets: (B, L) word ids, ``pad_id`` where there is no word.

    >>> bow_loss(torch.zeros(1, 4), torch.tensor([[1, 2, 0]]))  # uniform over 4 words, 2 words: 2 log 4
    tensor([2.7726])
    """
    logp = F.log_softmax(logits, dim=-1).gather(1, targets)
    return -(logp * (targets != pad_id)).sum(1)


class DialogCVAE(L.LightningModule):
    """CVAE with a bag-of-words loss; every size defaults to the paper's, see :data:`SMALL_PRESET`.

    Args:
        vocab_size: number of words, ``<pad>=0, <unk>=1, <bos>=2, <eos>=3`` included (linked from the data).
        embed_dim: word embedding size (paper: 200).
        utt_hidden: hidden size per direction of the bidirectional utterance encoder (paper: 300).
        ctx_hidden: context encoder GRU size (paper: 600).
        dec_hidden: decoder GRU size (paper: 400).
        latent_dim: size of z (paper: 200).
        prior_hidden: hidden layer of the prior network (Zhao et al.: max(2 * latent_dim, 100)); None for that.
        bow_hidden: hidden layer of the bag-of-words MLP (Zhao et al.: 400).
        bow_weight: weight of the bag-of-words loss (1 as in the paper; 0 gives the plain CVAE).
        beta: initial KL weight; the annealing callback overwrites it before every training step.
        lr: Adam learning rate (paper: 1e-3).
        lr_restart_cycles: if > 0, a cosine learning-rate decay restarted that many times over training, the
            paper's companion to cyclical annealing (pass the callback's ``n_cycle``); 0 keeps lr constant.
        lr_restart_period: if set, the cosine decay restarts every this many steps instead (pass the
            callback's ``period``: the reference code restarts the learning rate with every fixed-length
            cycle); excludes ``lr_restart_cycles``. Both are torch's ``CosineAnnealingWarmRestarts``, stepped per
            optimizer step, with ``T_0`` = the period or ``ceil(T / lr_restart_cycles)``.
        num_samples: responses sampled from the prior per context for the generation metrics (paper: 5).
        max_decode_len: longest generated response, ``<eos>`` included.
        val_gen_contexts: generation metrics in validation use only the contexts of index below this
            (test uses all), because greedy decoding and BLEU are slow next to a loss evaluation.
        bn_gamma: if set (> 0), the posterior mean mu_q goes through
            ``lightning_kl_anneal.BatchNormPosterior(latent_dim, gamma=bn_gamma)`` (BN-VAE, Zhu et al. 2020: mu
            batch-normalised with a fixed scale); None or 0 (the default) leaves it as it is. The KL floor of
            its docstring is against N(0, I); against this model's learned prior p(z | c) it is not guaranteed.

    The embedding metrics need fixed word vectors (one space for every model): set :attr:`word_vectors`,
    or let evaluation take them from the data module's ``word_vectors``.
    """

    def __init__(
        self,
        vocab_size: int = 20000,
        embed_dim: int = 200,
        utt_hidden: int = 300,
        ctx_hidden: int = 600,
        dec_hidden: int = 400,
        latent_dim: int = 200,
        prior_hidden: int | None = None,
        bow_hidden: int = 400,
        bow_weight: float = 1.0,
        beta: float = 1.0,
        lr: float = 1e-3,
        lr_restart_cycles: int = 0,
        lr_restart_period: int | None = None,
        num_samples: int = 5,
        max_decode_len: int = 40,
        val_gen_contexts: int = 64,
        bn_gamma: float | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("embed_dim", embed_dim),
            ("utt_hidden", utt_hidden),
            ("ctx_hidden", ctx_hidden),
            ("dec_hidden", dec_hidden),
            ("latent_dim", latent_dim),
            ("bow_hidden", bow_hidden),
            ("num_samples", num_samples),
            ("max_decode_len", max_decode_len),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        if vocab_size <= EOS:
            raise ValueError(f"`vocab_size` must exceed the 4 special tokens, got {vocab_size}")
        if not (bow_weight >= 0 and math.isfinite(bow_weight)):
            raise ValueError(f"`bow_weight` must be a finite number >= 0, got {bow_weight!r}")
        if lr_restart_cycles < 0:
            raise ValueError(f"`lr_restart_cycles` must be >= 0 (0 = constant lr), got {lr_restart_cycles}")
        if lr_restart_period is not None and (not isinstance(lr_restart_period, int) or lr_restart_period < 2):
            raise ValueError(f"`lr_restart_period` must be an int >= 2 or None, got {lr_restart_period!r}")
        if bn_gamma is not None and (isinstance(bn_gamma, bool) or not bn_gamma >= 0 or not math.isfinite(bn_gamma)):
            raise ValueError(f"`bn_gamma` must be None or a finite number >= 0 (0 or None = off), got {bn_gamma!r}")
        if lr_restart_period is not None and lr_restart_cycles:
            raise ValueError(
                f"`lr_restart_cycles`={lr_restart_cycles} and `lr_restart_period`={lr_restart_period} both set the "
                "restarts: pass one of them"
            )
        self.save_hyperparameters()
        prior_hidden = prior_hidden or max(2 * latent_dim, 100)
        self.beta = beta

        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.utt_encoder = nn.GRU(embed_dim, utt_hidden, batch_first=True, bidirectional=True)
        # +1 input: whether the utterance was said by the responder (the speaker indicator).
        self.ctx_encoder = nn.GRU(2 * utt_hidden + 1, ctx_hidden, batch_first=True)
        self.recognition = nn.Linear(ctx_hidden + 2 * utt_hidden, 2 * latent_dim)
        self.prior = nn.Sequential(
            nn.Linear(ctx_hidden, prior_hidden), nn.Tanh(), nn.Linear(prior_hidden, 2 * latent_dim)
        )
        self.dec_init = nn.Linear(ctx_hidden + latent_dim, dec_hidden)
        self.decoder = nn.GRU(embed_dim, dec_hidden, batch_first=True)
        self.out = nn.Linear(dec_hidden, vocab_size)
        self.bow = nn.Sequential(
            nn.Linear(ctx_hidden + latent_dim, bow_hidden), nn.Tanh(), nn.Linear(bow_hidden, vocab_size)
        )
        self.distinct = nn.ModuleDict({f"{s}_{n}": DistinctN(n) for s in ("val", "test") for n in (1, 2)})
        self.means = nn.ModuleDict({f"{s}_{k}": MeanMetric() for s in ("val", "test") for k in (*LOSS_KEYS, *GEN_KEYS)})
        self.word_vectors: torch.Tensor | None = None
        # last, so that the other weights are drawn exactly as without it
        self.mu_norm = BatchNormPosterior(latent_dim, gamma=bn_gamma) if bn_gamma else None

    # ------------------------------------------------------------------------------------- encoders
    def encode_utterances(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(N, L) ids and (N,) lengths -> (N, 2 * utt_hidden): final states of both directions."""
        packed = pack_padded_sequence(
            self.embedding(tokens), lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, h = self.utt_encoder(packed)
        return torch.cat([h[0], h[1]], dim=-1)

    def encode_context(self, batch: dict[str, Any]) -> torch.Tensor:
        """The context vector c, (B, ctx_hidden)."""
        return self._encode(batch, with_response=False)[0]

    def _encode(self, batch: dict[str, Any], with_response: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The context vector c and, if ``with_response``, the response's encoding biGRU(x).

        The context's utterances and the response share the utterance encoder, so they go through it in
        one call: a GRU on a CPU costs per time step far more than per row, and one call runs the steps
        once instead of twice (the training step: 45.8-50.0 -> 36.6-42.9 ms, benchmarks/dialog_step.py).
        """
        b, k, l = batch["context"].shape
        tokens, lengths = batch["context"].view(b * k, l), batch["context_lens"].view(b * k)
        if with_response:
            r = batch["response"]
            width = max(l, r.shape[1])
            tokens = torch.cat([F.pad(tokens, (0, width - l)), F.pad(r, (0, width - r.shape[1]))])
            lengths = torch.cat([lengths, batch["response_lens"]])
        encoded = self.encode_utterances(tokens, lengths)
        utts = encoded[: b * k].view(b, k, -1)
        packed = pack_padded_sequence(
            torch.cat([utts, batch["speakers"][..., None]], dim=-1),
            batch["num_turns"].cpu(),
            batch_first=True,
            enforce_sorted=False,
        )
        _, h = self.ctx_encoder(packed)
        return h[-1], (encoded[b * k :] if with_response else None)

    def prior_params(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prior(c).chunk(2, dim=-1)

    def posterior_params(
        self, c: torch.Tensor, batch: dict[str, Any], x: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | c, x)'s mean and log-variance; ``x`` is the response's encoding if already computed."""
        if x is None:
            x = self.encode_utterances(batch["response"], batch["response_lens"])
        mu, logvar = self.recognition(torch.cat([c, x], dim=-1)).chunk(2, dim=-1)
        if self.mu_norm is not None:
            mu = self.mu_norm(mu)
        return mu, logvar

    # ------------------------------------------------------------------------------------- decoder
    def decode_logits(self, c: torch.Tensor, z: torch.Tensor, response: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, R, V) for ``response`` (which ends in ``<eos>``)."""
        h0 = torch.tanh(self.dec_init(torch.cat([c, z], dim=-1)))[None]
        inputs = torch.cat([response.new_full((response.shape[0], 1), BOS), response[:, :-1]], dim=1)
        out, _ = self.decoder(self.embedding(inputs), h0.contiguous())
        return self.out(out)

    @torch.no_grad()
    def greedy_decode(self, c: torch.Tensor, z: torch.Tensor, max_len: int | None = None) -> list[list[int]]:
        """Greedy responses given [c; z], each cut before its ``<eos>``."""
        max_len = max_len or self.hparams.max_decode_len
        h = torch.tanh(self.dec_init(torch.cat([c, z], dim=-1)))[None].contiguous()
        token = torch.full((c.shape[0], 1), BOS, dtype=torch.long, device=c.device)
        steps, done = [], torch.zeros(c.shape[0], dtype=torch.bool, device=c.device)
        for _ in range(max_len):
            out, h = self.decoder(self.embedding(token), h)
            token = self.out(out).argmax(-1)
            steps.append(token)
            done |= token[:, 0] == EOS
            if bool(done.all()):
                break
        seqs = torch.cat(steps, dim=1).tolist()
        return [s[: s.index(EOS)] if EOS in s else s for s in seqs]

    def sample_responses(
        self, c: torch.Tensor, num_samples: int | None = None, index: torch.Tensor | None = None
    ) -> list[list[list[int]]]:
        """``num_samples`` greedy responses per context, each from its own z ~ p(z | c).

        With ``index`` (the contexts' dataset indices) the noise is :func:`example_noise`'s, else the
        global random generator's.
        """
        n = num_samples or self.hparams.num_samples
        mu, logvar = self.prior_params(c.repeat_interleave(n, dim=0))
        if index is None:
            eps = torch.randn_like(mu)
        else:
            eps = example_noise(index, (n, mu.shape[-1]), salt=2).view_as(mu).to(mu)
        z = mu + eps * (0.5 * logvar).exp()
        flat = self.greedy_decode(c.repeat_interleave(n, dim=0), z)
        return [flat[i * n : (i + 1) * n] for i in range(c.shape[0])]

    # ------------------------------------------------------------------------------------- losses
    def _shared_step(
        self, batch: dict[str, Any], stage: str
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
        """Loss, per-example metrics (without the stage prefix), the context vectors (reused by generation)
        and the latent parameters ``mu``, ``logvar`` (posterior) and ``prior_mu``, ``prior_logvar``."""
        c, x = self._encode(batch, with_response=True)
        mu_q, logvar_q = self.posterior_params(c, batch, x)
        mu_p, logvar_p = self.prior_params(c)
        if stage == "train":
            eps = torch.randn_like(mu_q)
        else:  # a function of the example only: evaluation does not depend on batching or processes
            eps = example_noise(batch["index"], mu_q.shape[1:], salt=1).to(mu_q)
        z = mu_q + eps * (0.5 * logvar_q).exp()
        logits = self.decode_logits(c, z, batch["response"])
        rec = F.cross_entropy(logits.transpose(1, 2), batch["response"], ignore_index=PAD, reduction="none").sum(1)
        kl = gaussian_kl(mu_q, logvar_q, prior_mu=mu_p, prior_logvar=logvar_p).sum(-1)  # KL(q || p), per example
        bow = bow_loss(self.bow(torch.cat([c, z], dim=-1)), batch["response"])
        loss = rec + self.beta * kl + self.hparams.bow_weight * bow
        # Raw Rec and KL are logged, not beta * KL: the weighted term says nothing about how much z is used.
        metrics = {"loss": loss, "rec": rec, "kl": kl, "bow": bow, "elbo": -(rec + kl)}
        latent = {"mu": mu_q, "logvar": logvar_q, "prior_mu": mu_p, "prior_logvar": logvar_p}
        return loss.mean(), metrics, c, latent

    @override
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss, metrics, _, _ = self._shared_step(batch, "train")
        self.log_dict({f"train/{k}": v.mean() for k, v in metrics.items()}, batch_size=len(batch["label"]))
        return loss

    @override
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val")

    @override
    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test")

    def _update_log(self, stage: str, key: str, value: torch.Tensor | float, weight: int) -> None:
        metric = self.means[f"{stage}_{key}"]
        metric.update(torch.as_tensor(value, dtype=torch.float, device=self.device), weight)
        self.log(f"{stage}/{key}", metric, on_step=False, on_epoch=True)

    def _eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        """Loss terms of every example, generation metrics of the selected contexts; returns the latent
        parameters (``mu``, ``logvar``, ``prior_mu``, ``prior_logvar``) for callbacks such as a latent monitor."""
        bsz = len(batch["label"])
        _, metrics, c, latent = self._shared_step(batch, stage)
        for k, v in metrics.items():
            self._update_log(stage, k, v.mean(), bsz)
        rows = torch.arange(bsz)
        if stage == "val":
            rows = rows[batch["index"].cpu() < self.hparams.val_gen_contexts]
        if len(rows):
            sub = _select(batch, rows) if len(rows) < bsz else batch
            for k, (value, weight) in self.generation_metrics(c[rows.to(c.device)], sub, stage).items():
                self._update_log(stage, k, value, weight)
            for n in (1, 2):
                self.log(f"{stage}/distinct{n}", self.distinct[f"{stage}_{n}"], on_step=False, on_epoch=True)
        return latent

    def _vectors(self) -> torch.Tensor:
        if self.word_vectors is None:
            dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            vectors = getattr(dm, "word_vectors", None)
            if vectors is None:
                raise RuntimeError(
                    "DialogCVAE needs fixed word vectors for the embedding metrics: set "
                    "`model.word_vectors = datamodule.word_vectors` or use DialogDataModule"
                )
            self.word_vectors = vectors
        return self.word_vectors

    # ------------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generation_metrics(self, c: torch.Tensor, batch: dict[str, Any], stage: str) -> dict[str, tuple[float, int]]:
        """The paper's protocol on one batch: ``{name: (mean over its contexts, number of contexts)}``
        (distinct-n accumulates separately)."""
        samples = self.sample_responses(c, index=batch["index"])
        emb = self._vectors()
        totals: dict[str, float] = {}
        cache: dict = {}
        for hyps, refs in zip(samples, batch["references"]):
            row = bleu_precision_recall(hyps, refs, cache=cache)
            row["emb_avg_p"], row["emb_avg_r"] = embedding_similarity(hyps, refs, emb, "average")
            row["emb_ext_p"], row["emb_ext_r"] = embedding_similarity(hyps, refs, emb, "extrema")
            for k, v in row.items():
                totals[k] = totals.get(k, 0.0) + v
        out = {k: (v / len(samples), len(samples)) for k, v in totals.items()}
        for n in (1, 2):
            self.distinct[f"{stage}_{n}"].update([h for hyps in samples for h in hyps])
        labelled = [i for i, lab in enumerate(batch["label"].tolist()) if lab >= 0 and batch["ref_labels"][i]]
        if labelled:
            # Does z carry the hidden factor? Decode from the posterior mean of the true response and check
            # that the result has that response's act (the act of its nearest reference).
            mu_q, _ = self.posterior_params(c, batch)
            decoded = self.greedy_decode(c, mu_q)
            hits, cover = 0.0, 0.0
            for i in labelled:
                refs, labs = batch["references"][i], batch["ref_labels"][i]
                hits += nearest_label(decoded[i], refs, labs) == int(batch["label"][i])
                # Share of the acts that the prior samples cover: diversity that is also valid.
                cover += len({nearest_label(h, refs, labs) for h in samples[i]}) / len(set(labs))
            out["factor_acc"] = (hits / len(labelled), len(labelled))
            out["factor_cov"] = (cover / len(labelled), len(labelled))
        return out

    @override
    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        cycles, period = self.hparams.lr_restart_cycles, self.hparams.get("lr_restart_period")
        if cycles == 0 and period is None:
            return optimizer
        if period is None:  # `cycles` restarts over the run, aligned with a schedule of `n_cycle=cycles`
            period = math.ceil(self.trainer.estimated_stepping_batches / cycles)
        # lr * (1 + cos(pi * (t mod P) / P)) / 2, restarted with every beta cycle as the paper's cyclical runs did: a
        # warm restart of the optimiser to go with the warm restart of beta (a confound, hence optional)
        schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=period)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _select(batch: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
    """The examples ``rows`` of a collated batch (tensors indexed, lists picked)."""
    idx = rows.tolist()
    return {k: v[rows.to(v.device)] if torch.is_tensor(v) else [v[i] for i in idx] for k, v in batch.items()}
