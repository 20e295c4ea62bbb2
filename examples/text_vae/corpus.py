"""A built-in, seeded corpus whose sentences share several *sentence-level* factors.

    python -c "from examples.text_vae.corpus import write_corpus; write_corpus('runs/corpus')"
    python -m examples.text_vae.corpus_stats      # measures it: figures/corpus_stats.json

Why this grammar: a global latent code only helps a language model if something decided once per
sentence shapes words all through it. Here six hidden factors are drawn per sentence, independent
and uniform, about 7 nats in all (``figures/corpus_stats.json``):

* ``topic`` (8 values): the nouns, verbs and descriptive adjectives of every clause,
* ``sentiment`` (2): the evaluative adjectives and adverbs of every clause,
* ``tense`` (3): every verb form (``kicked`` / ``kicks`` / ``will kick``) and the time adverbial,
* ``length`` (3): one, two or three clauses (the conjunctions and where ``<eos>`` comes),
* ``place`` (4): a place word in each clause (``downtown`` / ``offshore`` / ``uphill`` / ``upstate`` ...),
* ``certainty`` (2): a hedge opening each clause (``surely`` / ``perhaps`` ...),

and every clause re-uses them, with a little noise (an off-topic word, a flipped evaluative word,
a hedge or place of another value) so that reading a prefix never pins the factors down for
certain. A sentence opens with a hedge that only says ``certainty``, or with words of a topic and
a sentiment, so an LSTM decoder without ``z`` has to guess most factors before their first word,
and keeps paying for the noise later; a decoder that reads them from ``z`` does not. There are no
determiners or other filler words: every token but the conjunctions carries a factor, which keeps
sentences short and the training step cheap. The decoder is still
strong enough to model the corpus well without ``z``, which is what makes constant beta = 1
collapse.

The factors are kept as integer labels (``FACTORS``) for probing the latent space, and each
sentence's count of words expressing each factor as ``Split.expressions``. Generation is
deterministic for a given ``seed`` and sentences are unique across splits.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

FACTORS: tuple[str, ...] = ("topic", "sentiment", "tense", "length", "place", "certainty")
N_VALUES: tuple[int, ...] = (8, 2, 3, 3, 4, 2)  # values of each factor, drawn uniformly and independently

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
    "garden": (
        ["gardener", "rose", "tree", "hedge", "seed", "flower", "lawn", "shovel", "orchard", "greenhouse"],
        [
            ("plant", "plants", "planted"),
            ("water", "waters", "watered"),
            ("prune", "prunes", "pruned"),
            ("dig", "digs", "dug"),
            ("grow", "grows", "grew"),
            ("weed", "weeds", "weeded"),
        ],
        ["green", "leafy", "lush", "fragrant", "blooming"],
    ),
    "business": (
        ["manager", "company", "client", "contract", "office", "budget", "investor", "profit", "meeting", "report"],
        [
            ("sell", "sells", "sold"),
            ("hire", "hires", "hired"),
            ("invest", "invests", "invested"),
            ("negotiate", "negotiates", "negotiated"),
            ("manage", "manages", "managed"),
            ("sign", "signs", "signed"),
        ],
        ["corporate", "financial", "profitable", "strategic", "global"],
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
_PLACES = (
    ["downtown", "uptown", "midtown", "citywide"],
    ["seaside", "offshore", "ashore", "harborside"],
    ["uphill", "hilltop", "clifftop", "highland"],
    ["countryside", "farmland", "upstate", "backcountry"],
)
_HEDGES = (
    ["surely", "clearly", "certainly", "obviously", "definitely"],
    ["perhaps", "maybe", "probably", "possibly", "apparently"],
)
_CONJUNCTIONS = ["and", "while", "because", "so"]

_OFF_TOPIC = 0.1  # chance that a topic word comes from another topic
_FLIP = 0.1  # chance that an evaluative word, a hedge or a place phrase has another value of its factor
_P_HEDGE = 0.9  # chance that a clause opens with a hedge
_P_PLACE = 0.9  # chance that a clause has a place phrase


@dataclass(frozen=True)
class Split:
    """One split of the built-in corpus: tokenised sentences, their factor labels and expressions.

    ``expressions[i][j]`` counts the words of sentence ``i`` drawn for factor ``FACTORS[j]`` (a
    two-word verb or time adverbial counts once; ``length`` counts the conjunctions and the end).
    """

    sentences: list[list[str]]
    labels: list[tuple[int, ...]]  # one int per name in FACTORS
    expressions: list[tuple[int, ...]]  # one count per name in FACTORS


def _clause(rng: random.Random, f: dict[str, int], count: dict[str, int]) -> list[str]:
    names = list(_TOPICS)

    def other(value: int, n: int) -> int:
        """``value``, or with chance ``_FLIP`` another one drawn uniformly from the other ``n - 1``."""
        return (value + rng.randrange(1, n)) % n if rng.random() < _FLIP else value

    def topical(kind: int) -> object:
        t = rng.randrange(len(names)) if rng.random() < _OFF_TOPIC else f["topic"]
        count["topic"] += 1
        return rng.choice(_TOPICS[names[t]][kind])

    def evaluative(words: tuple[list[str], list[str]]) -> str:
        count["sentiment"] += 1
        return rng.choice(words[other(f["sentiment"], 2)])

    def noun_phrase() -> list[str]:
        words = []
        if rng.random() < 0.5:
            words.append(evaluative(_SENTIMENT_ADJ))
        if rng.random() < 0.3:
            words.append(topical(2))  # type: ignore[arg-type]
        words.append(topical(0))  # type: ignore[arg-type]
        return words

    words: list[str] = []
    if rng.random() < _P_HEDGE:
        count["certainty"] += 1
        words.append(rng.choice(_HEDGES[other(f["certainty"], 2)]))
    base, third, past = topical(1)  # type: ignore[misc]
    count["tense"] += 1
    words += noun_phrase() + [[past], [third], ["will", base]][f["tense"]] + noun_phrase()
    if rng.random() < 0.5:
        words.append(evaluative(_SENTIMENT_ADV))
    if rng.random() < _P_PLACE:
        count["place"] += 1
        words.append(rng.choice(_PLACES[other(f["place"], len(_PLACES))]))
    return words


def _sentence(rng: random.Random) -> tuple[list[str], tuple[int, ...], tuple[int, ...]]:
    f = {name: rng.randrange(n) for name, n in zip(FACTORS, N_VALUES)}
    count = dict.fromkeys(FACTORS, 0)
    words = _clause(rng, f, count)
    for _ in range(f["length"]):
        words += [rng.choice(_CONJUNCTIONS)] + _clause(rng, f, count)
    count["length"] = f["length"] + 1  # the conjunctions and the end of the sentence
    if rng.random() < 0.3:
        count["tense"] += 1
        words += rng.choice(_TIME[f["tense"]]).split()
    return words, tuple(f[k] for k in FACTORS), tuple(count[k] for k in FACTORS)


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
    expressions: list[tuple[int, ...]] = []
    total = n_train + n_valid + n_test
    attempts = 0
    while len(sentences) < total:
        attempts += 1
        if attempts > 50 * total:  # the grammar has ~10^12 sentences; this never triggers in practice
            raise RuntimeError(f"could not draw {total} distinct sentences")
        words, factors, counts = _sentence(rng)
        key = tuple(words)
        if key in seen:
            continue  # duplicates would leak test sentences into training
        seen.add(key)
        sentences.append(words)
        labels.append(factors)
        expressions.append(counts)
    bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid), "test": (n_train + n_valid, total)}
    return {k: Split(sentences[a:b], labels[a:b], expressions[a:b]) for k, (a, b) in bounds.items()}


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
