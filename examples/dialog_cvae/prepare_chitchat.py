"""Write a real dialog corpus in DailyDialog's format from the Chit-Chat dataset (BYU PCC lab, MIT licence).

    pip install chitchat-dataset                     # the corpus ships inside the package (7,168 dialogs)
    python examples/dialog_cvae/prepare_chitchat.py --out data/chitchat
    python examples/dialog_cvae/compare.py --data-dir data/chitchat

Each conversation is a list of turns, a turn one or more consecutive messages of one speaker; a turn
becomes one utterance (its messages joined by spaces) and a conversation one line of
``dialogues_{train,validation,test}.txt``, utterances ended by ``__eou__``. Conversations are split at
random (seed 0) into disjoint sets, so no dialog, hence no context, is shared between splits.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def conversations(path: Path) -> list[list[str]]:
    """The conversations of ``dataset.json`` as lists of utterances, in the file's id order."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for key in sorted(data):
        turns = [
            " ".join(" ".join(m["text"].replace("__eou__", " ").split()) for m in turn)
            for turn in data[key]["messages"]
        ]
        turns = [t for t in turns if t]
        if len(turns) >= 2:
            out.append(turns)
    return out


def default_json() -> Path:
    try:
        import chitchat_dataset
    except ImportError:
        raise SystemExit(
            "the Chit-Chat corpus is not installed: `pip install chitchat-dataset`, or pass --json"
        ) from None
    return Path(chitchat_dataset.__file__).with_name("dataset.json")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for dialogues_{train,validation,test}.txt")
    p.add_argument("--json", default=None, help="the corpus's dataset.json (default: the installed package's)")
    p.add_argument("--train", type=int, default=3000, help="training dialogs (default: %(default)s)")
    p.add_argument("--valid", type=int, default=100, help="validation dialogs (default: %(default)s)")
    p.add_argument("--test", type=int, default=100, help="test dialogs (default: %(default)s)")
    args = p.parse_args(argv)
    convs = conversations(Path(args.json) if args.json else default_json())
    if args.train + args.valid + args.test > len(convs):
        p.error(
            f"--train + --valid + --test must be at most {len(convs)} dialogs, got {args.train + args.valid + args.test}"
        )
    random.Random(0).shuffle(convs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, n in (("train", args.train), ("validation", args.valid), ("test", args.test)):
        lines = [" __eou__ ".join(c) + " __eou__\n" for c in convs[start : start + n]]
        (out / f"dialogues_{split}.txt").write_text("".join(lines), encoding="utf-8")
        start += n
        print(
            f"{out / f'dialogues_{split}.txt'}: {n} dialogs, {sum(len(c) for c in convs[start - n : start])} utterances"
        )


if __name__ == "__main__":
    main()
