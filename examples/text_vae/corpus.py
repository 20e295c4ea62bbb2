"""A built-in, seeded corpus whose sentences share a few *sentence-level* factors.

    python -c "from examples.text_vae.corpus import write_corpus; write_corpus('runs/corpus')"

Why this grammar: a global latent code only helps a language model if something decided once per
sentence shapes words all through it. Here four hidden factors are drawn per sentence

* ``topic`` (6 values): which nouns, verbs and descriptive adjectives appear,
* ``sentiment`` (2): which evaluative adjectives and adverbs appear,
* ``tense`` (3): the verb forms (``kicked`` / ``kicks`` / ``will kick``) and the time adverbial,
* ``length`` (3): one, two or three clauses,

and every clause re-uses them, with a little noise (an off-topic word, a flipped sentiment word)
so that reading a prefix never pins the factors down for certain. A sentence opens with a
factor-free determiner, so an LSTM decoder without ``z`` has to guess all factors at once before
its first content word, and keeps paying for the noise later; a decoder that reads them from ``z``
does not. The decoder is still strong enough to model the corpus well without ``z``, which is
what makes constant beta = 1 collapse.

The factors are kept as integer labels (``FACTORS``) for probing the latent space. Generation
is deterministic for a given ``seed`` and sentences are unique across splits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

FACTORS: tuple[str, ...] = ("topic", "sentiment", "tense", "length")

# (nouns, verbs as (base, third person, past), descriptive adjectives) per topic.
_TOPICS: dict[str, tuple[list[str], list[tuple[str, str, str]], list[str]]] = {
    "sports": (
        ["team", "coach", "striker", "goal", "match", "league", "referee", "stadium", "season", "ball"],
        [
            ("kick", "kicks", "kicked"),
            ("score", "scores", "scored"),
            ("train", "trains", "trained"),
            ("defend", "defends", "defended"),
            ("pass", "passes", "passed"),
            ("tackle", "tackles", "tackled"),
        ],
        ["athletic", "fast", "tactical", "muscular", "competitive"],
    ),
    "food": (
        ["chef", "soup", "bread", "kitchen", "recipe", "dessert", "waiter", "sauce", "menu", "oven"],
        [
            ("cook", "cooks", "cooked"),
            ("bake", "bakes", "baked"),
            ("taste", "tastes", "tasted"),
            ("serve", "serves", "served"),
            ("season", "seasons", "seasoned"),
            ("slice", "slices", "sliced"),
        ],
        ["spicy", "sweet", "salty", "crispy", "creamy"],
    ),
    "weather": (
        ["storm", "cloud", "rain", "wind", "forecast", "sky", "snow", "thunder", "breeze", "fog"],
        [
            ("blow", "blows", "blew"),
            ("pour", "pours", "poured"),
            ("freeze", "freezes", "froze"),
            ("drift", "drifts", "drifted"),
            ("clear", "clears", "cleared"),
            ("soak", "soaks", "soaked"),
        ],
        ["cold", "humid", "windy", "foggy", "stormy"],
    ),
    "music": (
        ["band", "singer", "guitar", "song", "album", "drummer", "concert", "melody", "piano", "chorus"],
        [
            ("play", "plays", "played"),
            ("sing", "sings", "sang"),
            ("record", "records", "recorded"),
            ("tune", "tunes", "tuned"),
            ("perform", "performs", "performed"),
            ("compose", "composes", "composed"),
        ],
        ["loud", "acoustic", "melodic", "rhythmic", "electric"],
    ),
    "travel": (
        ["train", "pilot", "hotel", "airport", "ticket", "tourist", "passport", "beach", "map", "luggage"],
        [
            ("visit", "visits", "visited"),
            ("book", "books", "booked"),
            ("fly", "flies", "flew"),
            ("pack", "packs", "packed"),
            ("explore", "explores", "explored"),
            ("board", "boards", "boarded"),
        ],
        ["distant", "exotic", "crowded", "scenic", "remote"],
    ),
    "science": (
        ["lab", "scientist", "experiment", "theory", "microscope", "sample", "data", "model", "atom", "paper"],
        [
            ("measure", "measures", "measured"),
            ("test", "tests", "tested"),
            ("analyze", "analyzes", "analyzed"),
            ("publish", "publishes", "published"),
            ("observe", "observes", "observed"),
            ("predict", "predicts", "predicted"),
        ],
        ["precise", "empirical", "novel", "complex", "rigorous"],
    ),
}
_SENTIMENT_ADJ = (
    ["great", "wonderful", "brilliant", "lovely", "excellent", "superb", "delightful", "fine"],
    ["terrible", "awful", "dreadful", "poor", "horrible", "lousy", "miserable", "bad"],
)
_SENTIMENT_ADV = (
    ["happily", "gracefully", "perfectly", "proudly", "beautifully", "nicely"],
    ["sadly", "clumsily", "badly", "poorly", "angrily", "awkwardly"],
)
_TIME = (
    ["yesterday", "last week", "last year", "long ago"],
    ["today", "now", "every day", "these days"],
    ["tomorrow", "next week", "next year", "soon"],
)
_DETERMINERS = ["the", "a", "my", "this", "our", "every", "that", "their"]
_CONJUNCTIONS = ["and", "while", "because", "so"]

_OFF_TOPIC = 0.1  # chance that a topic word comes from another topic
_FLIP = 0.1  # chance that an evaluative word has the other sentiment


@dataclass(frozen=True)
class Split:
    """One split of the built-in corpus: tokenised sentences and their factor labels."""

    sentences: list[list[str]]
    labels: list[tuple[int, ...]]  # one int per name in FACTORS


def _clause(rng: random.Random, topic: int, sentiment: int, tense: int) -> list[str]:
    names = list(_TOPICS)

    def topical(kind: int) -> object:
        t = rng.randrange(len(names)) if rng.random() < _OFF_TOPIC else topic
        return rng.choice(_TOPICS[names[t]][kind])

    def evaluative(words: tuple[list[str], list[str]]) -> str:
        s = 1 - sentiment if rng.random() < _FLIP else sentiment
        return rng.choice(words[s])

    def noun_phrase() -> list[str]:
        words = [rng.choice(_DETERMINERS)]
        if rng.random() < 0.6:
            words.append(evaluative(_SENTIMENT_ADJ))
        if rng.random() < 0.4:
            words.append(topical(2))  # type: ignore[arg-type]
        words.append(topical(0))  # type: ignore[arg-type]
        return words

    base, third, past = topical(1)  # type: ignore[misc]
    verb = [[past], [third], ["will", base]][tense]
    words = noun_phrase() + verb + noun_phrase()
    if rng.random() < 0.5:
        words.append(evaluative(_SENTIMENT_ADV))
    return words


def _sentence(rng: random.Random) -> tuple[list[str], tuple[int, ...]]:
    topic = rng.randrange(len(_TOPICS))
    sentiment = rng.randrange(2)
    tense = rng.randrange(3)
    length = rng.randrange(3)
    words = _clause(rng, topic, sentiment, tense)
    for _ in range(length):
        words += [rng.choice(_CONJUNCTIONS)] + _clause(rng, topic, sentiment, tense)
    if rng.random() < 0.5:
        words += rng.choice(_TIME[tense]).split()
    return words, (topic, sentiment, tense, length)


def generate_corpus(
    n_train: int = 10_000, n_valid: int = 1_000, n_test: int = 1_000, seed: int = 0
) -> dict[str, Split]:
    """Generate the built-in corpus deterministically.

    Args:
        n_train: Number of training sentences.
        n_valid: Number of validation sentences.
        n_test: Number of test sentences.
        seed: Seed of the generator; the same seed always gives the same corpus.

    Returns:
        ``{"train": Split, "valid": Split, "test": Split}``; no sentence appears twice.

    Raises:
        ValueError: If a size is not a positive int.

    Example:
        >>> c = generate_corpus(20, 5, 5, seed=1)
        >>> [len(c[s].sentences) for s in ("train", "valid", "test")]
        [20, 5, 5]
        >>> c["train"].sentences == generate_corpus(20, 5, 5, seed=1)["train"].sentences
        True
    """
    for name, value in (("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    rng = random.Random(seed)
    seen: set[tuple[str, ...]] = set()
    sentences: list[list[str]] = []
    labels: list[tuple[int, ...]] = []
    total = n_train + n_valid + n_test
    attempts = 0
    while len(sentences) < total:
        attempts += 1
        if attempts > 50 * total:  # the grammar has ~10^12 sentences; this never triggers in practice
            raise RuntimeError(f"could not draw {total} distinct sentences")
        words, factors = _sentence(rng)
        key = tuple(words)
        if key in seen:
            continue  # duplicates would leak test sentences into training
        seen.add(key)
        sentences.append(words)
        labels.append(factors)
    bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid), "test": (n_train + n_valid, total)}
    return {k: Split(sentences[a:b], labels[a:b]) for k, (a, b) in bounds.items()}


def write_corpus(directory: str | Path, seed: int = 0, **sizes: int) -> Path:
    """Write the built-in corpus in Penn Treebank format (``ptb.{train,valid,test}.txt``).

    The files can be read back with ``--data-dir``; labels go to ``labels.{split}.tsv``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for split, data in generate_corpus(seed=seed, **sizes).items():
        (out / f"ptb.{split}.txt").write_text("".join(" ".join(s) + "\n" for s in data.sentences))
        rows = ["\t".join(FACTORS)] + ["\t".join(map(str, lab)) for lab in data.labels]
        (out / f"labels.{split}.tsv").write_text("\n".join(rows) + "\n")
    return out
