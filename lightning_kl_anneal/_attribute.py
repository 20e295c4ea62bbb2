"""Resolving, checking and writing one attribute of a LightningModule, named by a dotted path."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch

from lightning_kl_anneal.exceptions import misconfiguration

__all__ = ["AttributeWriter"]

_PATH = "an attribute name or dotted path such as 'beta', 'loss_fn.beta' or 'losses.0.beta'"


def _has_setter(owner: object, name: str) -> bool:
    """Whether ``owner.name`` is a data descriptor on the class (a property), whose setter must be used."""
    static = inspect.getattr_static(type(owner), name, None)
    return hasattr(type(static), "__set__") and not isinstance(static, type)


class AttributeWriter:
    """Writes a value into ``pl_module.<path>``: through a property's setter, into a tensor in place, or as is.

    A dotted path reaches into submodules, ``nn.ModuleList`` and ``nn.ModuleDict`` included
    (``"losses.0.beta"``). A tensor (a buffer) is filled in place, so its object, dtype and device stay and
    compiled graphs stay valid; a property is written through its setter; any other attribute is set.

    Args:
        path: the attribute, or a dotted path to it.
        writer: who writes it, for the messages (the callback's class name).

    Raises:
        TypeError, ValueError: ``path`` is not an attribute name or a dotted path.

    Example:
        >>> import torch
        >>> module = torch.nn.Module()
        >>> module.loss = torch.nn.Module()
        >>> module.loss.register_buffer("beta", torch.tensor(0.0))
        >>> writer = AttributeWriter("loss.beta", "Demo")
        >>> buffer = module.loss.beta
        >>> writer.write(module, 0.5)
        >>> module.loss.beta is buffer, float(buffer)
        (True, 0.5)
    """

    def __init__(self, path: str, writer: str) -> None:
        if not isinstance(path, str):
            raise TypeError(f"`attribute` must be {_PATH}, got {path!r} of type {type(path).__name__}")
        if not all(part.isidentifier() or part.isdigit() for part in path.split(".")):
            raise ValueError(f"`attribute` must be {_PATH}, got {path!r}")
        self.path = path
        self.writer = writer

    def resolve(self, module: Any) -> tuple[Any, str]:
        """``(owner, name)``: the object that holds the attribute, and its name there."""
        *path, name = self.path.split(".")
        owner = module
        for i, part in enumerate(path):
            if not hasattr(owner, part):
                raise misconfiguration(
                    f"{type(module).__name__} has no attribute `{'.'.join(path[: i + 1])}` on the way to "
                    f"`{self.path}` for {self.writer}; check the `attribute` argument"
                )
            owner = getattr(owner, part)
        return owner, name

    def check(self, module: Any) -> None:
        """Refuse, with the fix, an attribute that is missing, an integer or grad-requiring tensor, or read-only."""
        owner, name = self.resolve(module)
        if not hasattr(owner, name):
            raise misconfiguration(
                f"{type(module).__name__} has no attribute `{self.path}` for {self.writer} to write; add "
                f"`self.{self.path} = 0.0` in __init__ (or `self.register_buffer({name!r}, torch.tensor(0.0))`), "
                "or pass `attribute=` naming yours"
            )
        value = getattr(owner, name)
        if isinstance(value, torch.Tensor):
            self._check_tensor(value)
            return
        static = inspect.getattr_static(type(owner), name, None)
        if isinstance(static, property) and static.fset is None:
            raise misconfiguration(
                f"`{self.path}` is a read-only property of {type(owner).__name__}, so {self.writer} cannot write "
                f"it; give it a setter, or store the value in a plain attribute (`self.{name} = 0.0`)"
            )

    def _check_tensor(self, value: torch.Tensor) -> None:
        if not value.is_floating_point():
            raise misconfiguration(
                f"`{self.path}` is a {value.dtype} tensor; {self.writer} needs a floating-point one, "
                "e.g. `torch.tensor(0.0)`"
            )
        if value.requires_grad:
            raise misconfiguration(
                f"`{self.path}` is a tensor that requires grad (a Parameter?); {self.writer} writes a "
                "schedule into it: use a buffer, `self.register_buffer(...)`, or a float"
            )

    def bind(self, module: Any) -> Callable[[float], Any]:
        """The cheapest correct write into ``module`` as it is now, for a path written at every step.

        Resolved again for every fit: a submodule may be replaced between fits.
        """
        owner, name = self.resolve(module)
        if _has_setter(owner, name):
            return functools.partial(setattr, owner, name)  # a property (or other descriptor): its setter
        current = getattr(owner, name)
        if isinstance(current, torch.Tensor):
            return current.fill_  # in place: same object, dtype and device
        instance_dict = getattr(owner, "__dict__", None)  # None with __slots__
        submodule = isinstance(owner, torch.nn.Module) and name in owner._modules
        if instance_dict is not None and name in instance_dict and not submodule:
            return functools.partial(instance_dict.__setitem__, name)  # a plain attribute: skip nn.Module.__setattr__
        return functools.partial(setattr, owner, name)

    def write(self, module: Any, value: float) -> None:
        """Resolve the path and write ``value`` now (for the rare writes: evaluation, restoring after it)."""
        owner, name = self.resolve(module)
        current = getattr(owner, name)
        if isinstance(current, torch.Tensor) and not _has_setter(owner, name):
            current.fill_(value)
        else:
            setattr(owner, name, value)
