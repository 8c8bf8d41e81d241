"""Error types the command line prints as one line (exit code 2) instead of a traceback.

Library code raises them (or ``ValueError``/``FileNotFoundError``) and ``hymba.cli`` catches them; no library
module imports the command line.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


__all__ = ["UsageError"]
