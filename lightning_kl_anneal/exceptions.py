"""The one error type the callbacks raise for a setting that cannot train what the user asked for."""

from __future__ import annotations

from lightning.pytorch.utilities.exceptions import MisconfigurationException as _LightningMisconfiguration

__all__ = ["MisconfigurationException"]

try:  # the standalone `pytorch_lightning` package (installed with `lightning`) has its own class
    from pytorch_lightning.utilities.exceptions import MisconfigurationException as _PLMisconfiguration
except ImportError:  # pragma: no cover - lightning without its pytorch_lightning twin
    _bases: tuple[type[Exception], ...] = (_LightningMisconfiguration,)
else:
    _bases = (_LightningMisconfiguration, _PLMisconfiguration)


class MisconfigurationException(*_bases):  # type: ignore[misc]
    """Raised before the first training step when a callback's setting cannot work with the run.

    It subclasses ``MisconfigurationException`` of both ``lightning.pytorch`` and the standalone
    ``pytorch_lightning`` package, so ``except MisconfigurationException`` catches it whichever
    of the two a user imports.

    Example:
        >>> from lightning.pytorch.utilities.exceptions import MisconfigurationException as Lightning
        >>> issubclass(MisconfigurationException, Lightning)
        True
    """
