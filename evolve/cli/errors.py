"""Which exceptions are the user's to fix (shown as one line) and which are bugs (traceback)."""

from __future__ import annotations

from evolve import EvolveError


def user_message(exc: BaseException) -> str | None:
    """A one-line message for errors caused by input, None for anything else (a bug).

    EvolveError covers every error class of evolve's own; a ValueError is a value the user gave
    that a config dataclass refused, a FileNotFoundError a path the user named."""
    if isinstance(exc, (EvolveError, FileNotFoundError, ValueError)):
        return str(exc)
    return None
