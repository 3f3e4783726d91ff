"""Read-only views of a run: the leaderboard and candidate views in the terminal and the
static HTML report.

May import: evolve.search (fitness, the run config), and every layer below it. Nothing imports
views but the CLI.
"""
