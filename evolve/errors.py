"""Which exceptions are the user's to fix (shown as one line) and which are bugs (traceback)."""

from __future__ import annotations


def user_message(exc: BaseException) -> str | None:
    """A one-line message for errors caused by input, None for anything else."""
    from evolve.model.contract import MixerLoadError

    if isinstance(exc, MixerLoadError):
        return str(exc)
    if isinstance(exc, (FileNotFoundError, ValueError)):
        return str(exc)
    from evolve.fsio import StateError
    from evolve.locks import LockTimeoutError

    if isinstance(exc, (StateError, LockTimeoutError)):
        return str(exc)
    if type(exc).__name__ in ("Interrupted", "EvalDataError", "NoModel"):
        return str(exc)
    return None
