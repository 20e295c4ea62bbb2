"""Tests for lightning_kl_anneal._attribute: resolving, checking and writing a dotted attribute, without a Trainer."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from lightning_kl_anneal import MisconfigurationException
from lightning_kl_anneal._attribute import AttributeWriter


class Owner(nn.Module):
    """Every kind of attribute the writer reaches: plain, buffer, property, through lists, dicts and slots."""

    def __init__(self) -> None:
        super().__init__()
        self.beta = 0.0
        self.register_buffer("buffer", torch.tensor(0.0, dtype=torch.float64))
        self.register_buffer("steps", torch.tensor(0))
        self.weight = nn.Parameter(torch.zeros(()))
        self.losses = nn.ModuleList([nn.Module()])
        self.losses[0].register_buffer("beta", torch.tensor(0.0))
        self.heads = nn.ModuleDict({"bow": nn.Module()})
        self.heads["bow"].beta = 0.0
        self._stored = 0.0
        self.setter_calls = 0

        class Slots:
            __slots__ = ("beta",)

        self.cfg = Slots()
        self.cfg.beta = 0.0

    @property
    def through_setter(self) -> torch.Tensor:  # a new tensor at every read: only the setter reaches the value
        return torch.tensor(self._stored)

    @through_setter.setter
    def through_setter(self, value: float) -> None:
        self.setter_calls += 1
        self._stored = float(value)

    @property
    def read_only(self) -> float:
        return 0.3


def written(owner: Owner, path: str, value: float, how: str) -> Any:
    """Write with ``bind`` (the per-step path) or ``write`` (the rare one) and read the value back."""
    writer = AttributeWriter(path, "Demo")
    if how == "bind":
        writer.bind(owner)(value)
    else:
        writer.write(owner, value)
    target, name = writer.resolve(owner)
    return getattr(target, name)


@pytest.mark.parametrize("how", ["bind", "write"])
def test_a_plain_attribute_is_set(how: str) -> None:
    owner = Owner()
    assert written(owner, "beta", 0.25, how) == 0.25 and owner.__dict__["beta"] == 0.25


@pytest.mark.parametrize("how", ["bind", "write"])
def test_a_buffer_is_filled_in_place_keeping_object_and_dtype(how: str) -> None:
    owner = Owner()
    buffer = owner.buffer
    assert written(owner, "buffer", 0.5, how) is buffer
    assert float(buffer) == 0.5 and buffer.dtype == torch.float64 and owner._buffers["buffer"] is buffer


@pytest.mark.parametrize("how", ["bind", "write"])
def test_a_property_is_written_through_its_setter(how: str) -> None:
    # Its getter returns a new tensor: filling that tensor in place would lose the value.
    owner = Owner()
    assert float(written(owner, "through_setter", 0.75, how)) == 0.75
    assert owner.setter_calls == 1 and owner._stored == 0.75


@pytest.mark.parametrize("how", ["bind", "write"])
@pytest.mark.parametrize(
    ("path", "read"),
    [
        ("losses.0.beta", lambda owner: float(owner.losses[0].beta)),
        ("heads.bow.beta", lambda owner: owner.heads["bow"].beta),
        ("cfg.beta", lambda owner: owner.cfg.beta),
    ],
    ids=["module-list", "module-dict", "slots"],
)
def test_dotted_paths_through_module_list_dict_and_slots(how: str, path: str, read: Any) -> None:
    owner = Owner()
    written(owner, path, 0.125, how)
    assert read(owner) == 0.125 and owner.beta == 0.0


def test_bind_resolves_once_and_a_rebind_follows_a_replaced_submodule() -> None:
    owner = Owner()
    writer = AttributeWriter("heads.bow.beta", "Demo")
    write = writer.bind(owner)
    old = owner.heads["bow"]
    owner.heads["bow"] = nn.Module()
    owner.heads["bow"].beta = 0.0
    write(0.5)  # the bound write still reaches the object it was bound to
    assert old.beta == 0.5 and owner.heads["bow"].beta == 0.0
    writer.bind(owner)(0.25)  # bound again (as every fit does): the new submodule
    assert owner.heads["bow"].beta == 0.25


@pytest.mark.parametrize(
    ("path", "exc", "match"),
    [
        (3, TypeError, r"`attribute` must be an attribute name or dotted path .*got 3 of type int"),
        ("loss fn", ValueError, r"`attribute` must be an attribute name or dotted path .*got 'loss fn'"),
        ("", ValueError, r"`attribute` must be .*got ''"),
        ("a..b", ValueError, r"got 'a..b'"),
    ],
)
def test_a_bad_path_is_refused_at_construction(path: Any, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        AttributeWriter(path, "Demo")


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("gamma", r"Owner has no attribute `gamma` for Demo to write; add `self.gamma = 0.0` in __init__"),
        ("loss_fn.beta", r"Owner has no attribute `loss_fn` on the way to `loss_fn.beta` for Demo"),
        ("losses.3.beta", r"no attribute `losses.3` on the way to `losses.3.beta`"),
        ("steps", r"`steps` is a torch.int64 tensor; Demo needs a floating-point one"),
        ("weight", r"`weight` is a tensor that requires grad \(a Parameter\?\)"),
        ("read_only", r"`read_only` is a read-only property of Owner, so Demo cannot write it; give it a setter"),
    ],
)
def test_check_refuses_with_the_fix(path: str, match: str) -> None:
    with pytest.raises(MisconfigurationException, match=match):
        AttributeWriter(path, "Demo").check(Owner())


def test_check_accepts_every_writable_kind_and_mutates_nothing() -> None:
    owner = Owner()
    before = {k: v.clone() for k, v in owner.state_dict().items()}, dict(vars(owner))
    for path in ("beta", "buffer", "through_setter", "losses.0.beta", "heads.bow.beta", "cfg.beta"):
        AttributeWriter(path, "Demo").check(owner)
    state, attributes = before
    assert owner.state_dict().keys() == state.keys()
    assert all(torch.equal(owner.state_dict()[k], v) for k, v in state.items())
    assert vars(owner) == attributes and owner.setter_calls == 0
