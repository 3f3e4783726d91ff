"""Strict YAML <-> dataclass loading: unknown keys and wrong types are errors that name the
file, the line and the valid keys. The bottom layer: it imports no other part of evolve.

Each part owns the dataclasses of its own section (e.g. evolve.launch.executors.LaunchConfig);
the run config that nests them all is evolve.search.run_config, above every part it nests.
"""
