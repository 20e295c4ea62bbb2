"""The one error type the callbacks raise for a setting that cannot train what the user asked for."""

from __future__ import annotations

import functools
import sys

from lightning.pytorch.utilities.exceptions import MisconfigurationException as _LightningMisconfiguration

__all__ = ["MisconfigurationException", "misconfiguration"]


class MisconfigurationException(_LightningMisconfiguration):
    """Raised before the first training step when a callback's setting cannot work with the run.

    It is Lightning's ``MisconfigurationException``; when the standalone ``pytorch_lightning``
    package is in use, the instance raised is also one of *its* ``MisconfigurationException``, so
    ``except MisconfigurationException`` catches it whichever of the two packages a user imports.
    (This module never imports ``pytorch_lightning`` itself: importing it redirects Lightning's log
    messages to its own logger names.)

    Example:
        >>> from lightning.pytorch.utilities.exceptions import MisconfigurationException as Lightning
        >>> isinstance(misconfiguration("`x` must be > 0, got -1"), Lightning)
        True
    """


@functools.cache
def _with_pytorch_lightning(pl_class: type[Exception]) -> type[MisconfigurationException]:
    return type("MisconfigurationException", (MisconfigurationException, pl_class), {"__module__": __name__})


def misconfiguration(message: str) -> MisconfigurationException:
    """The exception to raise: also the standalone package's class when ``pytorch_lightning`` is loaded."""
    if "pytorch_lightning" in sys.modules:  # the user's program uses it: its exceptions module is cheap now
        from pytorch_lightning.utilities.exceptions import MisconfigurationException as _PL

        return _with_pytorch_lightning(_PL)(message)
    return MisconfigurationException(message)
