"""Griffe extension for the docs build: the docstrings' Sphinx roles and ``Example:`` sections, as mkdocstrings reads them.

The docstrings keep Sphinx's spelling (Lightning's own), which reads well in ``help()`` and in editors:
``:class:`X``` is shown as code (`X`), and an ``Example:`` section is parsed as Google style's ``Examples:``, so its
``>>>`` lines become a code block (otherwise Markdown would read them as quotes); reST's ``\\ `` separator is dropped.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc|const):`~?([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:", re.MULTILINE)


class SphinxRolesAsCode(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            value = _ROLE.sub(r"`\1`", obj.docstring.value)
            value = value.replace("\\ ", "")  # reST's separator, as in ``unit``\ s
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", value)
