"""The `evolve` command and its subcommands (run, status, top, show, train, check, report,
doctor, cognition, llm, verify, config). The top layer: it may import every other part."""
