"""Data for the text VAE: the built-in corpus or Penn Treebank-format files, bucketed by length.

    python examples/text_vae/train.py fit --data.data_dir path/to/ptb

A folder with ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt`` (Mikolov's format: one
whitespace-tokenised sentence per line) is read once; the vocabulary comes from the training split
(size cap, ``<unk>`` for the rest); every split becomes one padded ``LongTensor`` and a list of
pre-cut batches of similar length. An epoch then only shuffles the *order* of those batches, so
nothing is re-tokenised or re-padded, and padding stays close to zero without packing.
"""

from __future__ import annotations

import math
import random
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from examples.text_vae.corpus import FACTORS, generate_corpus

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPLITS = ("train", "valid", "test")
_MAX_LINE_CHARS = 100_000  # a "line" longer than this is almost surely not text (binary, no newlines)


class Vocab:
    """Word <-> id map built from training sentences; ids 0..3 are ``<pad> <bos> <eos> <unk>``.

    Example:
        >>> v = Vocab.build([["a", "b", "a"], ["c"]], max_size=6)
        >>> len(v), v.encode(["a", "zzz"]), v.decode([4, 2])
        (6, [4, 3], ['a', '<eos>'])
    """

    def __init__(self, words: Sequence[str]) -> None:
        self.itos: list[str] = list(words)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if self.itos[:4] != [PAD, BOS, EOS, UNK]:
            raise ValueError(f"`words` must start with {[PAD, BOS, EOS, UNK]}, got {self.itos[:4]}")

    @classmethod
    def build(cls, sentences: Sequence[Sequence[str]], max_size: int = 10_000, min_count: int = 1) -> Vocab:
        """Most frequent words first (ties alphabetical, so the vocabulary is deterministic).

        Words seen fewer than ``min_count`` times are left out (they become ``<unk>``): a word seen
        once in training gives its embedding and output row one update, so it costs softmax compute
        on every token and buys next to nothing. ``max_size`` caps the result, specials included.

        Example:
            >>> Vocab.build([["a", "b", "a"], ["c", "a", "b"]], min_count=2).itos[4:]
            ['a', 'b']
        """
        if max_size < 5:
            raise ValueError(f"`max_size` must be >= 5 (4 special tokens + 1 word), got {max_size}")
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"`min_count` must be a positive int, got {min_count!r}")
        counts = Counter(w for s in sentences for w in s if w not in (PAD, BOS, EOS, UNK))
        kept = [w for w in counts if counts[w] >= min_count]
        ranked = sorted(kept, key=lambda w: (-counts[w], w))[: max_size - 4]
        return cls([PAD, BOS, EOS, UNK, *ranked])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: Sequence[str]) -> list[int]:
        unk = self.stoi[UNK]
        return [self.stoi.get(w, unk) for w in words]

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.itos[i] for i in ids]


def read_sentences(
    path: str | Path, max_len: int = 100, on_bad_line: Literal["error", "skip"] = "error"
) -> tuple[list[list[str]], dict[str, int]]:
    """Read one sentence per line, whitespace-tokenised.

    Blank lines are dropped. Lines with more than ``max_len`` tokens are skipped and counted (real
    corpora have a few; an LSTM step per token would make one of them dominate an epoch). Lines
    that are not UTF-8 raise, or are skipped and counted with ``on_bad_line="skip"``.

    Returns:
        The sentences and a dict of skip counts: ``{"blank", "too_long", "undecodable"}``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If a line is not UTF-8 (and ``on_bad_line="error"``), or nothing usable is left.
    """
    if on_bad_line not in ("error", "skip"):
        raise ValueError(f"`on_bad_line` must be 'error' or 'skip', got {on_bad_line!r}")
    if max_len < 1:
        raise ValueError(f"`max_len` must be a positive int, got {max_len!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: `data_dir` must hold ptb.train.txt, ptb.valid.txt, ptb.test.txt")
    skipped = {"blank": 0, "too_long": 0, "undecodable": 0}
    sentences: list[list[str]] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                if on_bad_line == "skip":
                    skipped["undecodable"] += 1
                    continue
                raise ValueError(
                    f"{path}:{lineno}: bytes that are not UTF-8 ({err.reason} at byte {err.start}); "
                    "fix the file or pass `on_bad_line='skip'` to drop such lines"
                ) from None
            if len(line) > _MAX_LINE_CHARS:
                skipped["too_long"] += 1
                continue
            words = line.split()
            if not words:
                skipped["blank"] += 1
            elif len(words) > max_len:
                skipped["too_long"] += 1
            else:
                sentences.append(words)
    if not sentences:
        raise ValueError(
            f"{path} has no usable sentence (skipped: {skipped}); expected one tokenised sentence per line"
        )
    return sentences, skipped


def read_ptb(
    data_dir: str | Path, max_len: int = 100, on_bad_line: Literal["error", "skip"] = "error"
) -> dict[str, list[list[str]]]:
    """Read ``ptb.{train,valid,test}.txt`` from ``data_dir``; warn once about skipped lines."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"`data_dir` {str(data_dir)!r} is not a directory")
    missing = [f"ptb.{s}.txt" for s in SPLITS if not (data_dir / f"ptb.{s}.txt").is_file()]
    if missing:
        raise FileNotFoundError(
            f"`data_dir` {str(data_dir)!r} lacks {missing}; it must hold ptb.train.txt, ptb.valid.txt, ptb.test.txt"
        )
    out: dict[str, list[list[str]]] = {}
    for split in SPLITS:
        out[split], skipped = read_sentences(data_dir / f"ptb.{split}.txt", max_len, on_bad_line)
        dropped = {k: v for k, v in skipped.items() if v and k != "blank"}
        if dropped:
            warnings.warn(
                f"ptb.{split}.txt: skipped {dropped} (max_len={max_len}, on_bad_line={on_bad_line!r})", stacklevel=2
            )
    return out


class EncodedSplit:
    """A split as tensors: ``tokens`` (N, L) holds ``w_1 .. w_n <eos> <pad>..``, ``lengths`` = n + 1."""

    def __init__(
        self, sentences: Sequence[Sequence[str]], vocab: Vocab, labels: Sequence[Sequence[int]] | None = None
    ) -> None:
        lengths = [len(s) + 1 for s in sentences]
        self.tokens = torch.zeros(len(sentences), max(lengths), dtype=torch.long)
        eos = vocab.stoi[EOS]
        for i, s in enumerate(sentences):
            self.tokens[i, : len(s) + 1] = torch.tensor(vocab.encode(s) + [eos])
        self.lengths = torch.tensor(lengths, dtype=torch.long)
        self.labels = torch.tensor(labels, dtype=torch.long) if labels is not None else None

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        lengths = self.lengths[index]
        out = {"tokens": self.tokens[index, : int(lengths.max())], "lengths": lengths}
        if self.labels is not None:
            out["labels"] = self.labels[index]
        return out


class BucketedBatches(Dataset):
    """Dataset whose items are whole batches of sentences of (nearly) the same length.

    Batches are cut once: sentences are sorted by length (ties broken by a seeded permutation) and
    chunked, so a batch wastes almost no compute on padding. Because an *item* is a batch, the
    DataLoader uses ``batch_size=None`` and Lightning's ``DistributedSampler`` splits batches
    across DDP ranks with no custom sampler.
    """

    def __init__(self, split: EncodedSplit, batch_size: int, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(split), generator=g)
        order = perm[torch.argsort(split.lengths[perm], stable=True)]
        self.split = split
        self.index = list(torch.split(order, batch_size))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.split.batch(self.index[i])


class ShardSampler(DistributedSampler):
    """Evaluation sharding for DDP: rank r gets items r, r + W, r + 2W, ..., each item exactly once.

    Lightning's default ``DistributedSampler`` pads every rank to the same length by repeating
    items, so summed evaluation metrics would count some sentences twice. Ranks may get one item
    less here, which is safe because evaluation has no per-step collective (metrics are reduced once,
    at the end of the epoch). A ``DistributedSampler`` subclass, so Lightning keeps it as it is.

    Example:
        >>> [list(ShardSampler(range(5), num_replicas=2, rank=r)) for r in (0, 1)]
        [[0, 2, 4], [1, 3]]
    """

    def __init__(self, dataset: Sequence, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)  # type: ignore[arg-type]
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self):  # type: ignore[override]
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def training_subset(
    lengths: Sequence[int], n: int | None = None, max_len: int | None = None, seed: int = 0, quantile: float = 0.99
) -> tuple[list[int], int]:
    """Which training sentences to keep: a seeded subsample of ``n``, then a length cap.

    Args:
        lengths: Word count of every training sentence.
        n: Keep a uniformly drawn subset of this many (``None``: all). Drawn once from ``seed``, so
            every schedule and model seed of a comparison trains on the same sentences.
        max_len: Drop kept sentences longer than this; ``None`` takes the ``quantile`` of the kept
            lengths (rounded up), so a few very long lines in a user's corpus cannot dominate the
            cost of an epoch (an LSTM pays per token, and bucketing puts them in batches of their own).
        seed: Seed of the subsample.
        quantile: The cap's quantile when ``max_len`` is ``None``.

    Returns:
        The kept indices in corpus order, and the cap used.

    Raises:
        ValueError: If ``n`` is not in ``[1, len(lengths)]`` or ``max_len`` is not positive.

    Example:
        >>> training_subset([3, 5, 4, 40, 2], max_len=10)
        ([0, 1, 2, 4], 10)
        >>> keep, cap = training_subset([3, 5, 4, 40, 2], n=3, max_len=100, seed=0)
        >>> len(keep), keep == sorted(keep)
        (3, True)
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(lengths)):
        raise ValueError(
            f"`train_sentences` must be an int in [1, {len(lengths)}] (the training split's size) or None, got {n!r}"
        )
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ValueError(
            f"`max_train_len` must be a positive int or None (the {quantile:.0%} length quantile), got {max_len!r}"
        )
    index = list(range(len(lengths)))
    if n is not None and n < len(lengths):
        index = sorted(random.Random(seed).sample(index, n))
    if max_len is None:
        ordered = sorted(lengths[i] for i in index)
        max_len = ordered[min(len(ordered) - 1, math.ceil(quantile * len(ordered)) - 1)]
    return [i for i in index if lengths[i] <= max_len], max_len


class TextVAEDataModule(L.LightningDataModule):
    """The built-in corpus (default) or a PTB-format folder, as length-bucketed batches.

    Data-dependent defaults, so a user's corpus works without tuning: the vocabulary is every
    training word seen at least ``min_count`` times (capped at ``max_vocab``), and training leaves
    out the longest 1 % of sentences (``max_train_len=None``). Validation and test keep every
    sentence, so their PPL is over the whole split.

    Args:
        data_dir: Folder with ``ptb.{train,valid,test}.txt``; ``None`` uses the built-in corpus.
        batch_size: Sentences per batch.
        max_vocab: Vocabulary size cap, special tokens included.
        min_count: Training words seen fewer times become ``<unk>``.
        max_len: Longer sentences are skipped in every split (and counted in a warning): a guard
            against lines that are not sentences.
        max_train_len: Training sentences longer than this are left out; ``None``: the 99th
            percentile of the training lengths.
        train_sentences: Train on a seeded subsample of this many training sentences (drawn with
            ``corpus_seed``); ``None``: all of them.
        on_bad_line: What to do with lines that are not UTF-8: ``"error"`` or ``"skip"``.
        corpus_size: Training sentences of the built-in corpus (valid and test get a tenth each).
        corpus_seed: Seed of the built-in corpus and of the ``train_sentences`` subsample.
        seed: Seed of the batch composition.
        num_workers: DataLoader workers. 0 is right here: batches are slices of tensors already in
            memory, so worker processes would only add start-up and pickling cost.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 32,
        max_vocab: int = 10_000,
        min_count: int = 2,
        max_len: int = 100,
        max_train_len: int | None = None,
        train_sentences: int | None = None,
        on_bad_line: Literal["error", "skip"] = "error",
        corpus_size: int = 10_000,
        corpus_seed: int = 0,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
        if on_bad_line not in ("error", "skip"):
            raise ValueError(f"`on_bad_line` must be 'error' or 'skip', got {on_bad_line!r}")
        if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"`min_count` must be a positive int, got {min_count!r}")
        if train_sentences is not None and (
            isinstance(train_sentences, bool) or not isinstance(train_sentences, int) or train_sentences < 1
        ):
            raise ValueError(f"`train_sentences` must be a positive int or None (all), got {train_sentences!r}")
        self.save_hyperparameters()
        self._splits: dict[str, EncodedSplit] | None = None
        self.vocab: Vocab | None = None
        #: what was read and kept, for a one-line report (compare.py prints it)
        self.stats: dict[str, float] = {}

    def _load(self) -> dict[str, EncodedSplit]:
        if self._splits is None:
            hp = self.hparams
            if hp.data_dir is None:
                n = hp.corpus_size
                corpus = generate_corpus(n, max(1, n // 10), max(1, n // 10), seed=hp.corpus_seed)
                sentences = {k: v.sentences for k, v in corpus.items()}
                labels: dict[str, list] = {k: v.labels for k, v in corpus.items()}
            else:
                sentences = read_ptb(hp.data_dir, hp.max_len, hp.on_bad_line)
                labels = {}
            n_read = len(sentences["train"])
            keep, cap = training_subset(
                [len(s) for s in sentences["train"]], hp.train_sentences, hp.max_train_len, hp.corpus_seed
            )
            sentences["train"] = [sentences["train"][i] for i in keep]
            if "train" in labels:
                labels["train"] = [labels["train"][i] for i in keep]
            self.vocab = Vocab.build(sentences["train"], hp.max_vocab, hp.min_count)
            self._splits = {k: EncodedSplit(v, self.vocab, labels.get(k)) for k, v in sentences.items()}
            valid = self._splits["valid"]
            unk = int((valid.tokens == self.vocab.stoi[UNK]).sum())
            self.stats = {
                "train_read": n_read, "train": len(keep), "valid": len(valid), "test": len(self._splits["test"]),
                "vocab": len(self.vocab), "max_train_len": cap,
                "valid_unk": unk / int((valid.lengths - 1).sum()),  # share of valid words (not <eos>) that are <unk>
            }  # fmt: skip
        return self._splits

    def describe(self) -> str:
        """One line: sentences per split, vocabulary, length cap and the validation <unk> rate."""
        self._load()
        s = self.stats
        sub = f" (of {s['train_read']})" if s["train"] != s["train_read"] else ""
        return (f"{s['train']}{sub} train / {s['valid']} valid / {s['test']} test sentences, vocab {s['vocab']} "
                f"(min count {self.hparams.min_count}), train length <= {s['max_train_len']}, "
                f"<unk> {s['valid_unk']:.1%} of valid words")  # fmt: skip

    @property
    def vocab_size(self) -> int:
        """Known before ``setup``, so LightningCLI can link it to ``model.vocab_size``."""
        self._load()
        return len(self.vocab)  # type: ignore[arg-type]

    @property
    def factor_names(self) -> tuple[str, ...]:
        return FACTORS if self.hparams.data_dir is None else ()

    def split(self, name: Literal["train", "valid", "test"]) -> EncodedSplit:
        return self._load()[name]

    def setup(self, stage: str) -> None:
        self._load()

    def _loader(self, name: Literal["train", "valid", "test"], shuffle: bool) -> DataLoader:
        batches = BucketedBatches(self.split(name), self.hparams.batch_size, seed=self.hparams.seed)
        trainer = self.trainer
        sampler = None
        if name != "train" and trainer is not None and trainer.world_size > 1:
            # every evaluation sentence exactly once over all ranks (see ShardSampler)
            sampler = ShardSampler(batches, num_replicas=trainer.world_size, rank=trainer.global_rank)
        # batch_size=None: each dataset item is already a batch (see BucketedBatches)
        return DataLoader(
            batches, batch_size=None, shuffle=shuffle, sampler=sampler, num_workers=self.hparams.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def padding_fraction(batches: BucketedBatches) -> float:
    """Share of the token slots in all batches that are padding (a check on bucketing)."""
    real = sum(int(batches.split.lengths[i].sum()) for i in batches.index)
    slots = sum(len(i) * int(batches.split.lengths[i].max()) for i in batches.index)
    return 1.0 - real / slots if slots else math.nan
