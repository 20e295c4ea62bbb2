"""A built-in, deterministically generated dialog corpus for the dialog CVAE example.

Every dialog ends with a response that the context leaves open: the responder picks a *dialog act*
(``accept``, ``decline``, ``question``, ``suggest``) and two scenario-specific details that the context
never mentions (an hour and a companion; a side dish and a drink; a size and a way to pay; a deadline and
a helper), and says it with some free wording. The act is said twice (its clause and its closing tag), the
first detail twice (its phrase and the tag echoes it), and the wording varies token by token (an opener
of two tokens, an optional filler word in two places, one of two phrasings of the clause)::

    <opener> [um] <clause: act, phrasing, context slots> <detail 1> [maybe] <detail 2> , <tag: act, detail 1>
    "well , sure , let us see a movie at six with lisa , see you at six !"

So the response carries about 8.1 nats that the context does not determine, and the first two tokens
(the opener, pure noise) resolve only ln 5 of them: :func:`response_entropy` computes both exactly by
enumerating every response a context admits, and ``figures/corpus_stats.json`` records them. A CVAE's
latent ``z`` has something to carry; a decoder without it can only spread its probability over the
choices. Responses keep copying slots from the context (the activity, the dish, the item, the report).

The splits share no context: they are cut over slot combinations of the context, so the test split
holds combinations never seen in training. Each context has a fixed set of references, 2 per act, drawn
from its response distribution by a generator seeded with the corpus seed and the context itself (a
function of the visible context), as the multi-reference protocol of Zhao et al. (ACL 2017) needs. A
training response is a fresh draw from the full distribution; a validation or test response is one of
its context's references.

    >>> corpus = generate_corpus(num_train=20, num_valid=4, num_test=4, seed=0)
    >>> ex = corpus["test"][0]
    >>> sorted(set(ex.ref_labels)) == list(range(len(ACTS))), ex.response in ex.references
    (True, True)
    >>> generate_corpus(num_train=5, seed=3) == generate_corpus(num_train=5, seed=3)
    True
"""

from __future__ import annotations

import itertools
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field

ACTS: tuple[str, ...] = ("accept", "decline", "question", "suggest")

#: References per act and context in every split.
REFS_PER_ACT = 2

# The free wording, independent of everything else: an opener (the first two tokens) and two optional
# filler words, each present with probability FILLER_P.
OPENERS: tuple[str, ...] = ("oh ,", "well ,", "hmm ,", "okay ,", "so ,")
FILLERS: tuple[str, str] = ("um", "maybe")
FILLER_P = 0.3


@dataclass(frozen=True)
class DialogExample:
    """One context/response pair.

    Attributes:
        context: the previous utterances, oldest first (whitespace-tokenised strings).
        speakers: for each context utterance, 1 if it was said by the responder, else 0.
        response: the response to model.
        references: valid responses for this context (``[response]`` when unknown).
        label: the dialog act (index into :data:`ACTS`) of ``response``, or -1 when unknown.
        ref_labels: the dialog act of each reference (empty when unknown).
    """

    context: tuple[str, ...]
    speakers: tuple[int, ...]
    response: str
    references: tuple[str, ...] = ()
    label: int = -1
    ref_labels: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class _Responses:
    """What one context admits: per act two clause phrasings, the two details, and the tag per act.

    ``tags[act]`` has a ``{}`` where the first detail's echo goes.
    """

    clauses: dict[str, tuple[str, str]]
    detail1: tuple[tuple[str, str], ...]  # (phrase, echo in the tag)
    detail2: tuple[str, ...]
    tags: dict[str, str]


# Slot values of the contexts. Kept small so that a tiny model can learn the corpus in a few minutes on a
# CPU, but varied enough that responses must copy content from the context (not only pick an act).
_DAYS = ("tonight", "tomorrow", "on friday", "on saturday", "on sunday", "next week")
_ACTIVITIES = (
    ("see a movie", "the cinema"),
    ("play tennis", "the park"),
    ("have dinner", "the new restaurant"),
    ("go swimming", "the pool"),
    ("study together", "the library"),
    ("go shopping", "the mall"),
)
_DISHES = ("soup", "pasta", "steak", "salad", "fish", "pizza", "curry")
_RESTAURANTS = ("the blue table", "golden house", "luigi 's", "the corner cafe")
_ITEMS = ("jacket", "bag", "phone", "lamp", "watch", "sweater")
_COLORS = ("red", "black", "blue", "green", "white")
_PRICES = ("twenty", "fifty", "eighty", "one hundred")
_DOCS = ("report", "budget", "slides", "contract", "summary")
_NAMES = ("tom", "anna", "mike", "lucy", "david", "emma")

# Details of a response that no context mentions: 6 values for the first, 4 for the second.
_HOURS = ("six", "seven", "eight", "nine", "ten", "noon")
_COMPANIONS = ("with lisa", "with mom", "with dad", "with sam")
_SIDES = ("rice", "fries", "bread", "beans", "noodles", "potatoes")
_DRINKS = ("and cola", "and water", "and beer", "and tea")
_SIZES = ("36", "38", "40", "42", "44", "46")
_PAYMENTS = ("by card", "in cash", "by phone", "by check")
_DEADLINES = ("noon", "two", "four", "five", "eight", "ten")
_HELPERS = ("with ben", "with sara", "with joe", "with kim")


def _pick(rng: random.Random, options: tuple, exclude: object = None):
    choices = [o for o in options if o != exclude]
    return choices[rng.randrange(len(choices))]


# A scenario is the product of its *key* slots (everything a response may mention from the context, all of
# them shown in the context, so the responses are a function of the visible context) and of free slots that
# only vary the wording of the context. The splits are made over the keys.
def _invitation_keys() -> list[tuple]:
    return [(day, act, other) for day in _DAYS for act in _ACTIVITIES for other in _ACTIVITIES if other != act]


def _invitation(key: tuple, rng: random.Random) -> tuple[list[str], _Responses]:
    day, (act, place), (other, _) = key
    name = _pick(rng, _NAMES)
    context = [
        f"hi {name} , are you free {day} ?",
        "i think so . why do you ask ?",
        f"do you want to {act} at {place} {day} ? or we could {other} .",
    ]
    responses = _Responses(
        clauses={
            "accept": (f"sure , let us {act}", f"yes , i will {act}"),
            "decline": (f"sorry , i can not {act}", f"no , i will not {act}"),
            "question": (f"can we meet at {place}", f"should we {act} {day}"),
            "suggest": (f"how about we {other}", f"we could {other} instead"),
        },
        detail1=tuple((f"at {h}", h) for h in _HOURS),
        detail2=_COMPANIONS,
        tags={"accept": "see you at {} !", "decline": "not at {} .", "question": "is {} okay ?",
              "suggest": "or after {} ?"},
    )  # fmt: skip
    return context, responses


def _restaurant_keys() -> list[tuple]:
    return [(dish, other) for dish in _DISHES for other in _DISHES if other != dish]


def _restaurant(key: tuple, rng: random.Random) -> tuple[list[str], _Responses]:
    dish, other = key
    name = _pick(rng, _RESTAURANTS)
    n = _pick(rng, ("two", "three", "four"))
    context = [
        f"good evening , welcome to {name} .",
        f"thank you , a table for {n} please .",
        f"would you like to try our {dish} today ? we also have {other} .",
    ]
    responses = _Responses(
        clauses={
            "accept": (f"yes , the {dish}", f"sure , i will take the {dish}"),
            "decline": (f"no , not the {dish}", f"no thanks , no {dish}"),
            "question": (f"is the {dish} good", f"how big is the {dish}"),
            "suggest": (f"i prefer the {other}", f"can i get the {other}"),
        },
        detail1=tuple((f"with {s}", s) for s in _SIDES),
        detail2=_DRINKS,
        tags={"accept": "{} is fine .", "decline": "no {} .", "question": "is {} extra ?",
              "suggest": "extra {} ."},
    )  # fmt: skip
    return context, responses


def _shopping_keys() -> list[tuple]:
    return [
        (item, color, other, price)
        for item in _ITEMS
        for color in _COLORS
        for other in _COLORS
        if other != color
        for price in _PRICES
    ]


def _shopping(key: tuple, rng: random.Random) -> tuple[list[str], _Responses]:
    item, color, other, price = key
    context = [
        "hello , can i help you ?",
        f"yes , i am looking for a {item} .",
        f"we have this {color} {item} for {price} dollars , and a {other} one .",
    ]
    responses = _Responses(
        clauses={
            "accept": (f"great , i will take the {color} one", f"fine , i will buy this {item}"),
            "decline": (f"sorry , {price} dollars is too much", f"no , i do not like this {item}"),
            "question": (f"do you have it in {other}", f"can i try the {color} one"),
            "suggest": (f"maybe the {other} one", "could i get it cheaper"),
        },
        detail1=tuple((f"size {z}", z) for z in _SIZES),
        detail2=_PAYMENTS,
        tags={"accept": "{} fits .", "decline": "even {} .", "question": "{} in stock ?",
              "suggest": "{} please ."},
    )  # fmt: skip
    return context, responses


def _work_keys() -> list[tuple]:
    return [(doc, day, name) for doc in _DOCS for day in _DAYS for name in _NAMES]


def _work(key: tuple, rng: random.Random) -> tuple[list[str], _Responses]:
    doc, day, name = key
    context = [f"did you finish the {doc} ?", "almost , why do you ask ?", f"{name} wants the {doc} {day} ."]
    responses = _Responses(
        clauses={
            "accept": (f"sure , i will send the {doc}", f"fine , the {doc} will be ready"),
            "decline": ("sorry , i can not finish it", f"no , the {doc} is not ready"),
            "question": (f"does {name} need the whole {doc}", f"why does {name} need it {day}"),
            "suggest": (f"can we ask {name} for more time", f"how about a draft {day}"),
        },
        detail1=tuple((f"by {d}", d) for d in _DEADLINES),
        detail2=_HELPERS,
        tags={"accept": "done by {} .", "decline": "not by {} .", "question": "by {} ?", "suggest": "after {} ?"},
    )
    return context, responses


_SCENARIOS = (
    (_invitation_keys, _invitation),
    (_restaurant_keys, _restaurant),
    (_shopping_keys, _shopping),
    (_work_keys, _work),
)

# One response is a choice of: opener, filler 1 (0/1), act, phrasing, detail 1, filler 2 (0/1), detail 2.
_Choice = tuple[int, int, int, int, int, int, int]


def _compose(r: _Responses, choice: _Choice) -> str:
    opener, f1, act, phrasing, d1, f2, d2 = choice
    phrase, echo = r.detail1[d1]
    words = [OPENERS[opener], FILLERS[0] if f1 else "", r.clauses[ACTS[act]][phrasing], phrase]
    words += [FILLERS[1] if f2 else "", r.detail2[d2], ",", r.tags[ACTS[act]].format(echo)]
    return " ".join(w for w in words if w)


def _draw(r: _Responses, rng: random.Random, act: int | None = None) -> tuple[str, int]:
    """One response and its act, drawn from the context's response distribution (``act`` fixed if given)."""
    act = rng.randrange(len(ACTS)) if act is None else act
    choice = (
        rng.randrange(len(OPENERS)),
        int(rng.random() < FILLER_P),
        act,
        rng.randrange(2),
        rng.randrange(len(r.detail1)),
        int(rng.random() < FILLER_P),
        rng.randrange(len(r.detail2)),
    )
    return _compose(r, choice), act


def response_distribution(r: _Responses) -> dict[str, float]:
    """Every response the context admits, with its probability (identical strings merged)."""
    pf = (1 - FILLER_P, FILLER_P)
    dist: dict[str, float] = defaultdict(float)
    sizes = (len(OPENERS), 2, len(ACTS), 2, len(r.detail1), 2, len(r.detail2))
    for choice in itertools.product(*(range(n) for n in sizes)):
        p = pf[choice[1]] * pf[choice[5]] / (len(OPENERS) * len(ACTS) * 2 * len(r.detail1) * len(r.detail2))
        dist[_compose(r, choice)] += p
    return dict(dist)


def _entropy(probs) -> float:
    return -math.fsum(p * math.log(p) for p in probs if p > 0)


def response_entropy(context_responses: _Responses, after_tokens: int = 2) -> tuple[float, float]:
    """H(response | context) and H(response | context, its first ``after_tokens`` tokens), in nats, exactly.

    The second is H(x | c) - H(x_1..k | c), since the first k tokens are a function of the response.

    >>> _, r = _invitation(("tonight", _ACTIVITIES[0], _ACTIVITIES[1]), random.Random(0))
    >>> h, h2 = response_entropy(r)
    >>> round(h, 3), round(h2, 3), round(h - h2, 3) == round(math.log(len(OPENERS)), 3)
    (8.089, 6.479, True)
    """
    h, after = _entropies(response_distribution(context_responses), (after_tokens,))
    return h, after[0]


def _entropies(dist: dict[str, float], ks: tuple[int, ...]) -> tuple[float, list[float]]:
    """H(x | c) and, for each k of ``ks``, H(x | c, x_1..k), from the distribution of x given c."""
    h = _entropy(dist.values())
    out = []
    for k in ks:
        prefix: dict[tuple[str, ...], float] = defaultdict(float)
        for text, p in dist.items():
            prefix[tuple(text.split()[:k])] += p
        out.append(h - _entropy(prefix.values()))
    return h, out


def _dialog(scenario: int, key: tuple, rng: random.Random) -> tuple[tuple[str, ...], tuple[int, ...], _Responses]:
    context, responses = _SCENARIOS[scenario][1](key, rng)
    # Drop the opening turn half of the time so that contexts vary in length and speaker pattern; the
    # last turn repeats every slot that a response may use, so nothing a response needs is dropped.
    if rng.random() < 0.5:
        context = context[1:]
    # Speakers alternate and the responder speaks next, so the last context turn is the other side.
    speakers = tuple((len(context) - i) % 2 == 0 for i in range(len(context)))
    return tuple(context), tuple(int(s) for s in speakers), responses


def references_of(
    context: tuple[str, ...], responses: _Responses, seed: int
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The context's references: :data:`REFS_PER_ACT` draws per act, a function of (seed, context) only."""
    rng = random.Random("|".join((str(seed), *context)))
    refs, labels = [], []
    for act in range(len(ACTS)):
        for _ in range(REFS_PER_ACT):
            refs.append(_draw(responses, rng, act)[0])
            labels.append(act)
    return tuple(refs), tuple(labels)


def split_keys(
    seed: int, valid_fraction: float = 0.1, test_fraction: float = 0.15
) -> dict[str, list[tuple[int, tuple]]]:
    """Assign every slot combination of every scenario to exactly one split, deterministically.

    Returns ``{"train": [(scenario, key), ...], "valid": [...], "test": [...]}``: per scenario, a shuffled
    ``test_fraction`` of its combinations is held out for test and ``valid_fraction`` for validation, so
    test contexts combine slot values that training showed only in other combinations.

    >>> keys = split_keys(seed=0)
    >>> set(keys["train"]).isdisjoint(keys["test"]), len(keys["test"]) > 0
    (True, True)
    """
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 < value < 0.5:
            raise ValueError(f"`{name}` must be in (0, 0.5), got {value!r}")
    rng = random.Random(seed)
    out: dict[str, list[tuple[int, tuple]]] = {"train": [], "valid": [], "test": []}
    for s, (keys_of, _) in enumerate(_SCENARIOS):
        keys = keys_of()
        rng.shuffle(keys)
        n_test, n_valid = max(1, round(test_fraction * len(keys))), max(1, round(valid_fraction * len(keys)))
        out["test"] += [(s, k) for k in keys[:n_test]]
        out["valid"] += [(s, k) for k in keys[n_test : n_test + n_valid]]
        out["train"] += [(s, k) for k in keys[n_test + n_valid :]]
    return out


def generate_corpus(
    num_train: int = 6000, num_valid: int = 300, num_test: int = 300, seed: int = 1234
) -> dict[str, list[DialogExample]]:
    """Generate the built-in dialog corpus, deterministically from ``seed``.

    The splits share no slot combination (:func:`split_keys`), hence no context: test measures how well
    a model generalises to unseen combinations of known slot values. Each example carries its context's
    references (:func:`references_of`: :data:`REFS_PER_ACT` per act, a function of the visible context
    and ``seed``) and one response: in training a fresh draw from the context's response distribution,
    in validation and test one of the references. Test contexts are distinct.

    Args:
        num_train: number of training dialogs.
        num_valid: number of validation dialogs.
        num_test: number of test contexts (distinct).
        seed: the corpus seed (independent of the training seed, so all runs share one corpus).

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}`` lists of :class:`DialogExample`.

    Raises:
        ValueError: if a split size is negative, or ``num_test`` exceeds the distinct test contexts.
    """
    out = _generate(num_train, num_valid, num_test, seed)
    return {split: [ex for ex, _ in pairs] for split, pairs in out.items()}


def _generate(
    num_train: int, num_valid: int, num_test: int, seed: int
) -> dict[str, list[tuple[DialogExample, _Responses]]]:
    """:func:`generate_corpus`, each example with what its context admits (for :func:`corpus_stats`)."""
    for name, value in (("num_train", num_train), ("num_valid", num_valid), ("num_test", num_test)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative int, got {value!r}")
    keys = split_keys(seed)
    rng = random.Random(seed)
    out: dict[str, list[tuple[DialogExample, _Responses]]] = {}
    for split, n in (("train", num_train), ("valid", num_valid), ("test", num_test)):
        by_scenario = [[k for s, k in keys[split] if s == i] for i in range(len(_SCENARIOS))]
        examples: list[tuple[DialogExample, _Responses]] = []
        seen: set[tuple[str, ...]] = set()
        misses = 0  # consecutive draws of an already-seen test context
        while len(examples) < n:
            if misses > 5000:
                raise ValueError(
                    f"`num_test` must be at most the number of distinct test contexts "
                    f"(about {len(seen)} with this seed), got {num_test}"
                )
            scenario = rng.randrange(len(_SCENARIOS))
            key = _pick(rng, tuple(by_scenario[scenario]))
            context, speakers, responses = _dialog(scenario, key, rng)
            if split == "test":
                if context in seen:
                    misses += 1
                    continue
                misses = 0
                seen.add(context)
            refs, ref_labels = references_of(context, responses, seed)
            if split == "train":  # a fresh draw: the model sees the whole response distribution
                response, label = _draw(responses, rng)
            else:  # one of the references, so that evaluation can compare a response with its act
                i = rng.randrange(len(refs))
                response, label = refs[i], ref_labels[i]
            examples.append((DialogExample(context, speakers, response, refs, label, ref_labels), responses))
        out[split] = examples
    return out


def _mean(values: list[float]) -> float:
    return round(math.fsum(values) / len(values), 4)


def corpus_stats(num_train: int = 6000, num_valid: int = 300, num_test: int = 300, seed: int = 1234) -> dict:
    """What the built-in corpus gives a latent to carry, measured exactly on its test contexts.

    Returns a dict with ``h_response_given_context_nats`` (mean over the test contexts of H(x | c)),
    ``h_after_2_tokens_nats`` (of H(x | c, x_1, x_2)), their minima over the test contexts,
    ``h_after_k_tokens_nats`` for k = 0..6 (how fast the tokens resolve the response), the entropy of each
    factor, the response lengths (tokens, without ``<eos>``) over all splits, and the corpus' settings.
    """
    data = _generate(num_train, num_valid, num_test, seed)
    ks = tuple(range(7))
    per_k: dict[int, list[float]] = {k: [] for k in ks}
    for _, responses in data["test"]:
        for k, value in zip(ks, _entropies(response_distribution(responses), ks)[1]):
            per_k[k].append(value)
    lengths = [len(ex.response.split()) for pairs in data.values() for ex, _ in pairs]
    lengths += [len(r.split()) for pairs in data.values() for ex, _ in pairs for r in ex.references]
    h_filler = _entropy((FILLER_P, 1 - FILLER_P))
    return {
        "h_response_given_context_nats": _mean(per_k[0]),
        "h_after_2_tokens_nats": _mean(per_k[2]),
        "h_response_given_context_min_nats": round(min(per_k[0]), 4),
        "h_after_2_tokens_min_nats": round(min(per_k[2]), 4),
        "h_after_k_tokens_nats": {str(k): _mean(v) for k, v in per_k.items()},
        "factor_entropy_nats": {
            "act (clause and tag)": round(math.log(len(ACTS)), 4),
            "detail 1 (its phrase, echoed in the tag)": round(math.log(6), 4),
            "detail 2": round(math.log(4), 4),
            "noise: opener (the first two tokens)": round(math.log(len(OPENERS)), 4),
            "noise: clause phrasing": round(math.log(2), 4),
            "noise: two optional fillers": round(2 * h_filler, 4),
        },
        "response_tokens": {
            "min": min(lengths),
            "mean": round(sum(lengths) / len(lengths), 2),
            "max": max(lengths),
        },
        "references_per_context": REFS_PER_ACT * len(ACTS),
        "test_contexts": len(data["test"]),
        "corpus": {"num_train": num_train, "num_valid": num_valid, "num_test": num_test, "seed": seed},
        "command": "python -m examples.dialog_cvae.corpus",
    }


if __name__ == "__main__":
    import json
    from pathlib import Path

    path = Path(__file__).with_name("figures") / "corpus_stats.json"
    stats = corpus_stats()
    path.write_text(json.dumps(stats, indent=2) + "\n")
    print(json.dumps(stats, indent=2))
