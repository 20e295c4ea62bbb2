"""Data for the dialog CVAE: vocabulary, DailyDialog and JSONL readers, batching, the DataModule.

>>> dm = DialogDataModule(num_train=64, num_valid=8, num_test=8, batch_size=4)
>>> dm.setup("fit")
>>> batch = next(iter(dm.train_dataloader()))
>>> batch["context"].shape[0], batch["response"].shape[0], batch["index"].shape
(4, 4, torch.Size([4]))
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .corpus import DialogExample, generate_corpus
from .embeddings import load_word_vectors, ppmi_svd_vectors

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-case and split words from punctuation (DailyDialog is already mostly spaced).

    >>> tokenize("Hi, it's 5 o'clock!")
    ['hi', ',', "it's", '5', "o'clock", '!']
    """
    return _TOKEN_RE.findall(text.lower())


class Vocab:
    """Word <-> id mapping with ``<pad>=0, <unk>=1, <bos>=2, <eos>=3``.

    >>> v = Vocab.build([["a", "b", "a"]], min_freq=1)
    >>> v.encode(["a", "zzz"]), v.decode([4, 3, 5])
    ([4, 1], 'a')
    """

    def __init__(self, itos: Sequence[str]) -> None:
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"`itos` must start with {SPECIALS}, got {tuple(itos[: len(SPECIALS)])}")
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Build from tokenised sentences; ties broken alphabetically so the ids are deterministic."""
        if min_freq < 1:
            raise ValueError(f"`min_freq` must be >= 1, got {min_freq}")
        counts = Counter(w for s in sentences for w in s)
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in SPECIALS), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.stoi.get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text, stopping at the first ``<eos>`` and dropping ``<pad>``/``<bos>``."""
        words = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                words.append(self.itos[i])
        return " ".join(words)


# ---------------------------------------------------------------------------------------- readers
def read_dailydialog(path: str | Path, context_turns: int = 10, min_turns: int = 2) -> list[DialogExample]:
    """Read a DailyDialog ``dialogues_*.txt`` file: one dialog per line, utterances ended by ``__eou__``.

    Every turn after the first becomes a response, with up to ``context_turns`` previous utterances as
    its context. Lines with fewer than ``min_turns`` utterances cannot give a pair: they are skipped
    and counted in one warning (blank lines are skipped silently).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DailyDialog file not found: {path}")
    examples: list[DialogExample] = []
    skipped: list[int] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            utterances = [" ".join(tokenize(u)) for u in line.split("__eou__")]
            utterances = [u for u in utterances if u]
            if len(utterances) < min_turns:
                skipped.append(lineno)
                continue
            for t in range(1, len(utterances)):
                ctx = utterances[max(0, t - context_turns) : t]
                # The responder of turn t also said turns t-2, t-4, ...
                speakers = tuple(int((t - i) % 2 == 0) for i in range(t - len(ctx), t))
                examples.append(DialogExample(tuple(ctx), speakers, utterances[t], (utterances[t],)))
    if skipped:
        warnings.warn(
            f"{path}: skipped {len(skipped)} line(s) with fewer than {min_turns} utterances "
            f"(first at line {skipped[0]}); utterances must be separated by '__eou__'",
            stacklevel=2,
        )
    return examples


def read_jsonl(path: str | Path, context_turns: int = 10) -> list[DialogExample]:
    """Read ``{"context": [...], "response": "...", "references": [...]?}`` objects, one per line.

    Speakers are taken to alternate, the responder speaking after the last context turn. Blank lines are
    skipped; anything else that is not such an object raises, naming the file and line.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: on invalid JSON or a malformed record, with ``file:line``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file not found: {path}")
    examples: list[DialogExample] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: invalid JSON ({err.msg}); expected one object per line") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")  # noqa: TRY004 - a bad file, like the checks below
            context, response = record.get("context"), record.get("response")
            if not isinstance(context, list) or not context or not all(isinstance(u, str) for u in context):
                raise ValueError(f"{where}: `context` must be a non-empty list of strings, got {context!r}")
            if not isinstance(response, str) or not tokenize(response):
                raise ValueError(f"{where}: `response` must be a non-empty string, got {response!r}")
            refs = record.get("references", [response])
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and tokenize(r) for r in refs):
                raise ValueError(f"{where}: `references` must be a non-empty list of non-empty strings, got {refs!r}")
            ctx = [" ".join(tokenize(u)) or "<unk>" for u in context][-context_turns:]
            speakers = tuple(int((len(ctx) - i) % 2 == 0) for i in range(len(ctx)))
            examples.append(
                DialogExample(
                    tuple(ctx), speakers, " ".join(tokenize(response)), tuple(" ".join(tokenize(r)) for r in refs)
                )
            )
    return examples


_SPLITS = {"train": ("train",), "valid": ("validation", "valid", "dev"), "test": ("test",)}


def read_data_dir(data_dir: str | Path, context_turns: int = 10) -> dict[str, list[DialogExample]]:
    """Find and read the train / validation / test files of ``data_dir``.

    Accepted per split (first match wins): ``{split}.jsonl``, ``dialogues_{split}.txt`` and
    ``{split}/dialogues_{split}.txt`` (DailyDialog's own layout), with ``split`` one of
    ``train``; ``validation``/``valid``/``dev``; ``test``.

    Raises:
        FileNotFoundError: naming the directory and the file names tried, if a split is missing.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"`data_dir` is not a directory: {data_dir}")
    out: dict[str, list[DialogExample]] = {}
    for split, names in _SPLITS.items():
        tried: list[str] = []
        for name in names:
            for candidate, reader in (
                (f"{name}.jsonl", read_jsonl),
                (f"dialogues_{name}.txt", read_dailydialog),
                (f"{name}/dialogues_{name}.txt", read_dailydialog),
            ):
                tried.append(candidate)
                if (data_dir / candidate).is_file():
                    out[split] = reader(data_dir / candidate, context_turns=context_turns)
                    break
            if split in out:
                break
        if split not in out:
            raise FileNotFoundError(f"no {split} file in {data_dir}; tried: {', '.join(tried)}")
        if not out[split]:
            raise ValueError(f"{data_dir}: the {split} file holds no usable dialog")
    return out


# ---------------------------------------------------------------------------------------- batching
class DialogDataset(Dataset):
    """Examples encoded to ids once, up front (the corpora are small)."""

    def __init__(self, examples: Sequence[DialogExample], vocab: Vocab, max_len: int = 40) -> None:
        self.items = []
        for i, ex in enumerate(examples):
            self.items.append(
                {
                    "index": i,
                    "context": [vocab.encode(u.split()[:max_len]) or [UNK] for u in ex.context],
                    "speakers": list(ex.speakers),
                    "response": vocab.encode(ex.response.split()[: max_len - 1]) + [EOS],
                    "references": [vocab.encode(r.split()[: max_len - 1]) for r in (ex.references or (ex.response,))],
                    "label": ex.label,
                    "ref_labels": list(ex.ref_labels),
                }
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad into tensors; references stay Python lists (their number varies per context).

    Returns a dict with ``context`` (B, K, L) ids, ``context_lens`` (B, K) utterance lengths (0 for
    padding turns), ``num_turns`` (B,), ``speakers`` (B, K), ``response`` (B, R) ids ending in
    ``<eos>``, ``response_lens`` (B,), ``label`` (B,), ``index`` (B,) the examples' positions in their
    dataset (evaluation draws each example's noise from it, so results do not depend on batching or on
    the number of processes), and the lists ``references``, ``ref_labels``.
    """
    b = len(items)
    k = max(len(it["context"]) for it in items)
    lu = max(len(u) for it in items for u in it["context"])
    lr = max(len(it["response"]) for it in items)
    context = torch.full((b, k, lu), PAD, dtype=torch.long)
    context_lens = torch.zeros(b, k, dtype=torch.long)
    speakers = torch.zeros(b, k, dtype=torch.float)
    response = torch.full((b, lr), PAD, dtype=torch.long)
    for i, it in enumerate(items):
        for j, u in enumerate(it["context"]):
            context[i, j, : len(u)] = torch.tensor(u)
            context_lens[i, j] = len(u)
        speakers[i, : len(it["speakers"])] = torch.tensor(it["speakers"], dtype=torch.float)
        response[i, : len(it["response"])] = torch.tensor(it["response"])
    return {
        "context": context,
        "context_lens": context_lens,
        "num_turns": torch.tensor([len(it["context"]) for it in items]),
        "speakers": speakers,
        "response": response,
        "response_lens": torch.tensor([len(it["response"]) for it in items]),
        "label": torch.tensor([it["label"] for it in items]),
        "index": torch.tensor([it.get("index", i) for i, it in enumerate(items)]),
        "references": [it["references"] for it in items],
        "ref_labels": [it["ref_labels"] for it in items],
    }


class EvalDistributedSampler(DistributedSampler):
    """Every example exactly once over all processes: rank ``r`` gets examples ``r, r + W, r + 2W, ...``.

    Lightning's default for evaluation, ``DistributedSampler``, pads the last batch by repeating
    examples so that every rank runs the same number of steps; sums over the evaluation set then count
    some examples twice. Ranks here may differ by one example, which evaluation tolerates (no gradient
    synchronisation). Being a ``DistributedSampler``, Lightning leaves it in place.

    >>> list(EvalDistributedSampler(range(5), num_replicas=2, rank=1))
    [1, 3]
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self):
        return iter(range(self.rank, len(self.dataset), self.num_replicas))


def _even_subset(examples: list[DialogExample], n: int | None) -> list[DialogExample]:
    """At most ``n`` examples spread evenly over the list (deterministic), all of them if ``n`` is None."""
    if n is None or n >= len(examples):
        return examples
    return [examples[(i * len(examples)) // n] for i in range(n)]


class DialogDataModule(L.LightningDataModule):
    """The built-in corpus (default) or a DailyDialog / JSONL directory (``data_dir``).

    The data are read and the vocabulary built on first access to :attr:`vocab`, so that LightningCLI
    can link ``data.vocab_size`` to the model before ``setup``.

    Args:
        data_dir: a directory of DailyDialog ``dialogues_*.txt`` or ``*.jsonl`` files; None for the built-in corpus.
        batch_size: examples per batch.
        context_turns: how many previous utterances form the context (the paper uses 10).
        num_train / num_valid / num_test: sizes of the built-in corpus. With ``data_dir``, ``num_train`` is
            ignored and ``num_valid`` / ``num_test`` cap the evaluation sets (examples spread evenly over
            the file; None keeps all), since generation metrics cost far more than a training step.
        corpus_seed: seed of the built-in corpus.
        min_freq: words seen fewer times in the training split become ``<unk>``; None picks 1 on the
            built-in corpus and 2 on real data (a word seen once cannot be learned, only memorised).
        max_vocab: at most this many words, specials included; None keeps every word on the built-in
            corpus and, on real data, the most frequent words that together cover 95% of the training
            tokens (at most 20000): the rest is a long tail of typos and names that a CPU-sized model
            cannot learn, and every word costs a row of the output and bag-of-words layers.
        max_len: utterances are truncated to this many tokens; None picks 40 on the built-in corpus and,
            on real data, the 90th percentile of the training utterances' lengths plus the ``<eos>``,
            clipped to [10, 40] (decoding and the encoders' cost grow with it).
        embeddings: a GloVe / word2vec text file for the embedding metrics; None derives the vectors
            from the training split (``embeddings.ppmi_svd_vectors``). Either way one fixed space scores
            every model.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 32,
        context_turns: int = 10,
        num_train: int = 6000,
        num_valid: int = 300,
        num_test: int | None = 300,
        corpus_seed: int = 1234,
        min_freq: int | None = None,
        max_vocab: int | None = None,
        max_len: int | None = None,
        embeddings: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size}")
        if context_turns < 1:
            raise ValueError(f"`context_turns` must be a positive int, got {context_turns}")
        if min_freq is not None and min_freq < 1:
            raise ValueError(f"`min_freq` must be a positive int or None, got {min_freq}")
        if max_len is not None and max_len < 2:
            raise ValueError(f"`max_len` must be an int >= 2 or None, got {max_len}")
        self.save_hyperparameters()
        self._splits: dict[str, list[DialogExample]] | None = None
        self._vocab: Vocab | None = None
        self._vectors: torch.Tensor | None = None
        self._utterances: list[str] | None = None

    @property
    def splits(self) -> dict[str, list[DialogExample]]:
        if self._splits is None:
            hp = self.hparams
            if hp.data_dir is None:
                num_test = 300 if hp.num_test is None else hp.num_test
                splits = generate_corpus(hp.num_train, hp.num_valid, num_test, seed=hp.corpus_seed)
                self._splits = {k: [self._trim(ex) for ex in v] for k, v in splits.items()}
            else:
                splits = read_data_dir(hp.data_dir, context_turns=hp.context_turns)
                splits["valid"] = _even_subset(splits["valid"], hp.num_valid)
                splits["test"] = _even_subset(splits["test"], hp.num_test)
                self._splits = splits
        return self._splits

    def _trim(self, ex: DialogExample) -> DialogExample:
        k = self.hparams.context_turns
        return DialogExample(ex.context[-k:], ex.speakers[-k:], ex.response, ex.references, ex.label, ex.ref_labels)

    @property
    def min_freq(self) -> int:
        """The vocabulary's frequency cut-off: ``min_freq``, or 1 (built-in corpus) / 2 (real data)."""
        if self.hparams.min_freq is not None:
            return self.hparams.min_freq
        return 1 if self.hparams.data_dir is None else 2

    @property
    def max_len(self) -> int:
        """Tokens kept per utterance: ``max_len``, or 40 (built-in) / the training split's 95th percentile."""
        if self.hparams.max_len is not None:
            return self.hparams.max_len
        if self.hparams.data_dir is None:
            return 40
        lengths = sorted(len(u.split()) for u in self._train_utterances())
        return min(40, max(10, lengths[int(0.9 * (len(lengths) - 1))] + 1))  # + 1: the <eos>

    def _train_utterances(self) -> list[str]:
        """Every distinct utterance of the training split, in a fixed order."""
        if self._utterances is None:
            self._utterances = sorted({u for ex in self.splits["train"] for u in (*ex.context, ex.response)})
        return self._utterances

    @property
    def max_vocab(self) -> int | None:
        """The vocabulary's size cap: ``max_vocab``, or none (built-in) / 95% token coverage (real data)."""
        if self.hparams.max_vocab is not None or self.hparams.data_dir is None:
            return self.hparams.max_vocab
        counts = sorted(self._train_counts().values(), reverse=True)
        total, covered = sum(counts), 0
        for n, c in enumerate(counts, start=1):
            covered += c
            if covered >= 0.95 * total:
                return min(20000, n + len(SPECIALS))
        return min(20000, len(counts) + len(SPECIALS))

    @property
    def vocab(self) -> Vocab:
        if self._vocab is None:
            train = self.splits["train"]
            sents = [u.split() for ex in train for u in (*ex.context, ex.response)]
            self._vocab = Vocab.build(sents, self.min_freq, self.max_vocab)
        return self._vocab

    def _train_counts(self) -> Counter:
        """Word counts over the training examples (contexts and responses), as the vocabulary counts them."""
        return Counter(w for ex in self.splits["train"] for u in (*ex.context, ex.response) for w in u.split())

    @property
    def word_vectors(self) -> torch.Tensor:
        """(vocab_size, dim) fixed word vectors for the embedding metrics, one space for every model.

        From ``embeddings`` when given, else PPMI + truncated SVD of the training split's distinct
        utterances (deterministic). Rows of zeros mean "no vector" and are skipped by the metrics.
        """
        if self._vectors is None:
            if self.hparams.embeddings is not None:
                self._vectors = load_word_vectors(self.hparams.embeddings, self.vocab.itos)
            else:
                sents = [self.vocab.encode(u.split()) for u in self._train_utterances()]
                self._vectors = ppmi_svd_vectors(sents, len(self.vocab))
        return self._vectors

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "datasets", None) is None:  # encoded once, reused by every fit/test with this module
            self.datasets = {k: DialogDataset(v, self.vocab, self.max_len) for k, v in self.splits.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        sampler = None
        trainer = self.trainer
        if not shuffle and trainer is not None and trainer.world_size > 1:
            sampler = EvalDistributedSampler(self.datasets[split], trainer.world_size, trainer.global_rank)
        return DataLoader(
            self.datasets[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
