"""The search: the driver loop, the run config, follow-ups (confirm, ablate, promote, verify
requests), proposers (mutator, random search, the model's roles as the driver uses them),
sampling, seed designs and fitness.

May import: evolve.agents, evolve.launch, evolve.gates, evolve.train, evolve.model,
evolve.state, evolve.config. Never evolve.views or evolve.cli.
"""
