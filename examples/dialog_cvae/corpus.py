"""A built-in, deterministically generated dialog corpus for the dialog CVAE example.

Every dialog ends with a turn whose *dialog act* is a hidden factor: the same context admits an
``accept``, a ``decline``, a ``question`` or a ``suggest`` response (and, within each act, a few
phrasings). The context says nothing about which act comes next, so the act is exactly the kind of
response-level variation a CVAE's latent ``z`` should capture; a model whose KL collapsed can only
produce the most likely phrasing. The test split keeps, for every context, *all* valid responses
(one per act and phrasing) as references with their act labels, as the multi-reference protocol of
Zhao et al. (ACL 2017) needs. The references are a function of the visible context (every slot a
response mentions is in the context), and the splits share no context: they are cut over slot
combinations, so the test split holds combinations never seen in training.

    >>> corpus = generate_corpus(num_train=20, num_valid=4, num_test=4, seed=0)
    >>> ex = corpus["test"][0]
    >>> sorted(set(ex.ref_labels)) == list(range(len(ACTS)))
    True
    >>> generate_corpus(num_train=5, seed=3) == generate_corpus(num_train=5, seed=3)
    True
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

ACTS: tuple[str, ...] = ("accept", "decline", "question", "suggest")


@dataclass(frozen=True)
class DialogExample:
    """One context/response pair.

    Attributes:
        context: the previous utterances, oldest first (whitespace-tokenised strings).
        speakers: for each context utterance, 1 if it was said by the responder, else 0.
        response: the response to model (for the test split: one of ``references``).
        references: every valid response for this context (``[response]`` when unknown).
        label: the hidden factor (index into :data:`ACTS`) of ``response``, or -1 when unknown.
        ref_labels: the hidden factor of each reference (empty when unknown).
    """

    context: tuple[str, ...]
    speakers: tuple[int, ...]
    response: str
    references: tuple[str, ...] = ()
    label: int = -1
    ref_labels: tuple[int, ...] = field(default=())


# Slot values. Kept small so that a tiny model can learn the corpus in a few minutes on a CPU,
# but varied enough that responses must copy content from the context (not only pick an act).
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


def _pick(rng: random.Random, options: tuple, exclude: object = None):
    choices = [o for o in options if o != exclude]
    return choices[rng.randrange(len(choices))]


# A scenario is the product of its *key* slots (everything a response may mention, all of them shown in
# the context, so the reference set is a function of the visible context) and of free slots that only
# vary the wording of the context. The splits are made over the keys.
def _invitation_keys() -> list[tuple]:
    return [(day, act, other) for day in _DAYS for act in _ACTIVITIES for other in _ACTIVITIES if other != act]


def _invitation(key: tuple, rng: random.Random) -> tuple[list[str], dict[str, list[str]]]:
    day, (act, place), (other, _) = key
    name = _pick(rng, _NAMES)
    context = [
        f"hi {name} , are you free {day} ?",
        "i think so . why do you ask ?",
        f"do you want to {act} at {place} {day} ? or we could {other} .",
    ]
    responses = {
        "accept": [f"sure , i would love to {act} . see you {day} !", f"yes , {place} sounds great ."],
        "decline": [f"sorry , i am busy {day} .", f"no thanks , i do not want to {act} ."],
        "question": [f"what time do you want to meet at {place} ?", "who else is coming with us ?"],
        "suggest": [f"how about we {other} instead ?", "can we do it another day ?"],
    }
    return context, responses


def _restaurant_keys() -> list[tuple]:
    return [(dish, other) for dish in _DISHES for other in _DISHES if other != dish]


def _restaurant(key: tuple, rng: random.Random) -> tuple[list[str], dict[str, list[str]]]:
    dish, other = key
    name = _pick(rng, _RESTAURANTS)
    n = _pick(rng, ("two", "three", "four"))
    context = [
        f"good evening , welcome to {name} .",
        f"thank you , a table for {n} please .",
        f"would you like to try our {dish} today ? we also have {other} .",
    ]
    responses = {
        "accept": [f"yes , the {dish} please .", f"sure , i will have the {dish} ."],
        "decline": [f"no thanks , i do not like {dish} .", "no , i am not very hungry ."],
        "question": [f"how much is the {dish} ?", f"is the {dish} spicy ?"],
        "suggest": [f"could i have the {other} instead ?", f"what about the {other} ?"],
    }
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


def _shopping(key: tuple, rng: random.Random) -> tuple[list[str], dict[str, list[str]]]:
    item, color, other, price = key
    context = [
        "hello , can i help you ?",
        f"yes , i am looking for a {item} .",
        f"we have this {color} {item} for {price} dollars , and a {other} one .",
    ]
    responses = {
        "accept": [f"great , i will take the {color} one .", f"perfect , i will buy this {item} ."],
        "decline": [f"{price} dollars is too expensive for me .", f"sorry , i do not like this {item} ."],
        "question": [f"do you have it in {other} ?", f"can i try the {item} first ?"],
        "suggest": [f"could you give me a discount on the {item} ?", f"maybe a {other} one would be better ."],
    }
    return context, responses


def _work_keys() -> list[tuple]:
    return [(doc, day, name) for doc in _DOCS for day in _DAYS for name in _NAMES]


def _work(key: tuple, rng: random.Random) -> tuple[list[str], dict[str, list[str]]]:
    doc, day, name = key
    context = [f"did you finish the {doc} ?", "almost , why do you ask ?", f"{name} wants the {doc} {day} ."]
    responses = {
        "accept": [f"no problem , i will send the {doc} {day} .", f"okay , the {doc} will be ready ."],
        "decline": [f"sorry , i cannot finish it {day} .", f"no , that is impossible for the {doc} ."],
        "question": [f"does {name} need the whole {doc} ?", f"why does {name} need it so soon ?"],
        "suggest": [f"can we ask {name} for more time ?", f"how about i send a draft {day} ?"],
    }
    return context, responses


_SCENARIOS = (
    (_invitation_keys, _invitation),
    (_restaurant_keys, _restaurant),
    (_shopping_keys, _shopping),
    (_work_keys, _work),
)


def _dialog(
    scenario: int, key: tuple, rng: random.Random
) -> tuple[tuple[str, ...], tuple[int, ...], dict[str, list[str]]]:
    context, responses = _SCENARIOS[scenario][1](key, rng)
    # Drop the opening turn half of the time so that contexts vary in length and speaker pattern; the
    # last turn repeats every slot that a response may use, so nothing a reference needs is dropped.
    if rng.random() < 0.5:
        context = context[1:]
    # Speakers alternate and the responder speaks next, so the last context turn is the other side.
    speakers = tuple((len(context) - i) % 2 == 0 for i in range(len(context)))
    return tuple(context), tuple(int(s) for s in speakers), responses


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
    a model generalises to unseen combinations of known slot values. Each example carries every valid
    response of its context as references (one per act and phrasing, 8 in all), a function of the
    visible context only, and one response whose act is drawn uniformly. Test contexts are distinct.

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
    for name, value in (("num_train", num_train), ("num_valid", num_valid), ("num_test", num_test)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be a non-negative int, got {value!r}")
    keys = split_keys(seed)
    rng = random.Random(seed)
    out: dict[str, list[DialogExample]] = {}
    for split, n in (("train", num_train), ("valid", num_valid), ("test", num_test)):
        by_scenario = [[k for s, k in keys[split] if s == i] for i in range(len(_SCENARIOS))]
        examples: list[DialogExample] = []
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
            label = rng.randrange(len(ACTS))
            response = _pick(rng, tuple(responses[ACTS[label]]))
            if split == "test":
                if context in seen:
                    misses += 1
                    continue
                misses = 0
                seen.add(context)
            refs = tuple(r for act in ACTS for r in responses[act])
            ref_labels = tuple(a for a, act in enumerate(ACTS) for _ in responses[act])
            examples.append(DialogExample(context, speakers, response, refs, label, ref_labels))
        out[split] = examples
    return out
