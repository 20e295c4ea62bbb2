"""Data for the dialog CVAE: vocabulary, DailyDialog and JSONL readers, batching, the DataModule.

    >>> dm = DialogDataModule(num_train=64, num_valid=8, num_test=8, batch_size=4)
    >>> dm.setup("fit")
    >>> batch = next(iter(dm.train_dataloader()))
    >>> batch["context"].shape[:2], batch["response"].shape[0]
    (torch.Size([4, 3]), 4)
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
from torch.utils.data import DataLoader, Dataset

from .corpus import DialogExample, generate_corpus

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
            raise ValueError(f"`itos` must start with {SPECIALS}, got {tuple(itos[:len(SPECIALS)])}")
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Build from tokenised sentences; ties broken alphabetically so the ids are deterministic."""
        if min_freq < 1:
            raise ValueError(f"`min_freq` must be >= 1, got {min_freq}")
        counts = Counter(w for s in sentences for w in s)
        words = sorted((w for w, c in counts.items() if c >= min_freq and w not in SPECIALS), key=lambda w: (-counts[w], w))
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
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
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
            examples.append(DialogExample(tuple(ctx), speakers, " ".join(tokenize(response)),
                                          tuple(" ".join(tokenize(r)) for r in refs)))
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
            for candidate, reader in ((f"{name}.jsonl", read_jsonl), (f"dialogues_{name}.txt", read_dailydialog),
                                      (f"{name}/dialogues_{name}.txt", read_dailydialog)):
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
        for ex in examples:
            self.items.append({
                "context": [vocab.encode(u.split()[:max_len]) or [UNK] for u in ex.context],
                "speakers": list(ex.speakers),
                "response": vocab.encode(ex.response.split()[: max_len - 1]) + [EOS],
                "references": [vocab.encode(r.split()[: max_len - 1]) for r in (ex.references or (ex.response,))],
                "label": ex.label,
                "ref_labels": list(ex.ref_labels),
            })

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad into tensors; references stay Python lists (their number varies per context).

    Returns a dict with ``context`` (B, K, L) ids, ``context_lens`` (B, K) utterance lengths (0 for
    padding turns), ``num_turns`` (B,), ``speakers`` (B, K), ``response`` (B, R) ids ending in
    ``<eos>``, ``response_lens`` (B,), ``label`` (B,), and the lists ``references``, ``ref_labels``.
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
        "references": [it["references"] for it in items],
        "ref_labels": [it["ref_labels"] for it in items],
    }


class DialogDataModule(L.LightningDataModule):
    """The built-in corpus (default) or a DailyDialog / JSONL directory (``data_dir``).

    The data are read and the vocabulary built on first access to :attr:`vocab`, so that LightningCLI
    can link ``data.vocab_size`` to the model before ``setup``.

    Args:
        data_dir: a directory of DailyDialog ``dialogues_*.txt`` or ``*.jsonl`` files; None for the built-in corpus.
        batch_size: examples per batch.
        context_turns: how many previous utterances form the context (the paper uses 10).
        num_train / num_valid / num_test: sizes of the built-in corpus (ignored with ``data_dir``).
        corpus_seed: seed of the built-in corpus.
        min_freq / max_vocab: vocabulary cut-offs (words are counted on the training split).
        max_len: utterances are truncated to this many tokens.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 32,
        context_turns: int = 10,
        num_train: int = 6000,
        num_valid: int = 300,
        num_test: int = 300,
        corpus_seed: int = 1234,
        min_freq: int = 1,
        max_vocab: int | None = 20000,
        max_len: int = 40,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size}")
        if context_turns < 1:
            raise ValueError(f"`context_turns` must be a positive int, got {context_turns}")
        self.save_hyperparameters()
        self._splits: dict[str, list[DialogExample]] | None = None
        self._vocab: Vocab | None = None

    @property
    def splits(self) -> dict[str, list[DialogExample]]:
        if self._splits is None:
            hp = self.hparams
            if hp.data_dir is None:
                splits = generate_corpus(hp.num_train, hp.num_valid, hp.num_test, seed=hp.corpus_seed)
                self._splits = {k: [self._trim(ex) for ex in v] for k, v in splits.items()}
            else:
                self._splits = read_data_dir(hp.data_dir, context_turns=hp.context_turns)
        return self._splits

    def _trim(self, ex: DialogExample) -> DialogExample:
        k = self.hparams.context_turns
        return DialogExample(ex.context[-k:], ex.speakers[-k:], ex.response, ex.references, ex.label, ex.ref_labels)

    @property
    def vocab(self) -> Vocab:
        if self._vocab is None:
            train = self.splits["train"]
            sents = [u.split() for ex in train for u in (*ex.context, ex.response)]
            self._vocab = Vocab.build(sents, self.hparams.min_freq, self.hparams.max_vocab)
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def setup(self, stage: str | None = None) -> None:
        self.datasets = {k: DialogDataset(v, self.vocab, self.hparams.max_len) for k, v in self.splits.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.hparams.batch_size, shuffle=shuffle,
                          collate_fn=collate, num_workers=self.hparams.num_workers,
                          persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
