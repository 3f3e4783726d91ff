"""evolve: an autonomous research loop for linear-attention token mixers.

The parts live in subpackages (docs/ARCHITECTURE.md is the map). This module holds only the one
error base, so that any part can raise it without importing another part.
"""


class EvolveError(Exception):
    """An error the user can cause and fix: bad input, a refused or damaged run, a missing model
    or corpus. The CLI prints `error: <message>` for it (a traceback only for anything else, which
    is a bug). Subclasses also derive the stdlib type that fits (ValueError, RuntimeError, ...), so
    callers that catch those keep working."""
