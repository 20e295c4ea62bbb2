"""The commit of the code a process runs, for the ``config`` block of every results file.

Imported first by ``compare.py`` and ``probe.py``, before torch and Lightning, so that the commit is the one
checked out when the process started (a slow start on a busy machine must not pick up later edits).
``+dirty`` is added when tracked code or configuration (``*.py``, ``*.yaml``, ``*.toml``) differs from
that commit; edits of documentation or results do not change what runs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
_CODE = ("*.py", "*.yaml", "*.toml")


def _git(*cmd: str) -> str:
    return subprocess.run(["git", *cmd], cwd=_ROOT, capture_output=True, text=True, check=True).stdout.strip()


def _commit_now() -> str:
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *_CODE)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


COMMIT_AT_START = _commit_now()


def git_commit() -> str:
    """The commit checked out when this process imported the module (``+dirty``: code differed from it)."""
    return COMMIT_AT_START
