"""Tests for lightning_kl_anneal._checks: one policy, wrong type -> TypeError, wrong value -> ValueError."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import lightning_kl_anneal as kla
from lightning_kl_anneal import CyclicalKLAnnealing, LatentMonitor, MutualInformation, ScheduledAttribute
from lightning_kl_anneal._checks import check_choice, check_int, check_name, check_real, check_rows


def test_accepted_values_come_back_as_plain_python_types() -> None:
    assert check_int("n", np.int64(3), 1) == 3 and type(check_int("n", np.int64(3), 1)) is int
    assert type(check_real("x", np.float32(0.5))) is float
    assert check_int("n", None, 1, optional=True) is None and check_real("x", None, optional=True) is None
    assert check_real("ratio", math.nan, finite=False) != check_real("ratio", math.nan, finite=False)  # NaN passes
    assert check_choice("unit", "epoch", ("step", "epoch")) == "epoch"
    assert check_name("key", "mu") == "mu" and check_name("key", None, optional=True) is None
    rows = torch.zeros(3, 2)
    assert check_rows("mu", rows, min_rows=3) is rows


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: check_int("n", 2.5, 1), TypeError, r"^`n` must be an int >= 1, got 2.5 of type float$"),
        (lambda: check_int("n", True, 1), TypeError, r"^`n` must be an int >= 1, got True of type bool$"),
        (lambda: check_int("n", 0, 1), ValueError, r"^`n` must be an int >= 1, got 0$"),
        (lambda: check_int("n", 0, 1, optional=True), ValueError, r"^`n` must be an int >= 1 or None, got 0$"),
        (lambda: check_int("n", "3"), TypeError, r"^`n` must be an int, got '3' of type str$"),
        (lambda: check_real("x", "1"), TypeError, r"^`x` must be a finite real number, got '1' of type str$"),
        (lambda: check_real("x", False), TypeError, r"^`x` must be a finite real number, got False of type bool$"),
        (lambda: check_real("x", math.inf), ValueError, r"^`x` must be a finite real number, got inf$"),
        (lambda: check_real("x", math.nan, 0.0), ValueError, r"^`x` must be a finite real number >= 0, got nan$"),
        (lambda: check_real("x", -0.5, 0.0), ValueError, r"^`x` must be a finite real number >= 0, got -0.5$"),
        (
            lambda: check_real("x", math.nan, finite=False, minimum=0.0),
            ValueError,
            r"must be a real number >= 0, got nan",
        ),
        (lambda: check_choice("u", "day", ("step",)), ValueError, r"^`u` must be one of \('step',\), got 'day'$"),
        (lambda: check_name("k", ""), ValueError, r"^`k` must be a non-empty string, got ''$"),
        (lambda: check_name("k", 3), TypeError, r"^`k` must be a non-empty string, got 3 of type int$"),
        (lambda: check_rows("mu", [1.0]), TypeError, r"^`mu` must be a \(batch, d\) tensor, got \[1.0\] of type list$"),
        (lambda: check_rows("mu", torch.zeros(2, 3, 4)), ValueError, r"got shape \(2, 3, 4\)$"),
        (
            lambda: check_rows("mu", torch.zeros(1, 3), min_rows=2, what="a variance needs two"),
            ValueError,
            r"^`mu` must be a \(batch, d\) tensor with at least 2 rows, got shape \(1, 3\): a variance needs two$",
        ),
    ],
)
def test_one_policy_with_the_name_the_value_and_what_is_accepted(call: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize(
    "make",
    [
        lambda: CyclicalKLAnnealing(n_cycle=2.5),
        lambda: CyclicalKLAnnealing(eval_beta="1"),
        lambda: ScheduledAttribute(lambda s, t: 0.0, total_steps=2.5),
        lambda: ScheduledAttribute(lambda s, t: 0.0, attribute=3),
        lambda: ScheduledAttribute(lambda s, t: 0.0, log_name=3),
        # the drift the issue found: these raised ValueError while `n_cycle=2.5` raised TypeError
        lambda: LatentMonitor(patience=2.5),
        lambda: MutualInformation(n_samples=2.5),
        lambda: kla.mutual_information(torch.zeros(3, 2), torch.zeros(3, 2), n_samples=2.5),
        lambda: kla.free_bits_kl(torch.zeros(2, 2), "0.5"),
        lambda: kla.active_units(torch.zeros(3, 2), threshold="0"),
    ],
)
def test_a_wrong_type_is_a_type_error_across_the_callbacks(make: Any) -> None:
    with pytest.raises(TypeError, match=r"^`\w+` must be .*got .* of type \w+$"):
        make()


def test_no_module_of_the_library_writes_its_own_argument_checks() -> None:
    # One place for argument checks: outside _checks.py no module tests numeric types by hand (the callback's
    # check of what a user's schedule returns is about a value, not an argument) or defines a `_check_int`.
    import pathlib

    package = pathlib.Path(kla.__file__).parent
    texts = {p.name: p.read_text() for p in package.glob("*.py") if p.name != "_checks.py"}
    assert [name for name, text in texts.items() if "numbers.Integral" in text] == []
    assert [name for name, text in texts.items() if "def _check_int" in text or "def _check_real" in text] == []
