"""The search: the driver loop and its steps (propose with novelty screening, check, reuse of
finished results, score, follow-ups: confirm, ablate, promote, verify requests), the run config,
proposers (mutator, the random and independent controls, the model's roles as the driver uses
them), sampling (UCB1, islands), seed designs and fitness.

May import: evolve.agents, evolve.launch, evolve.gates, evolve.train, evolve.model,
evolve.state, evolve.config. Never evolve.views or evolve.cli.
"""
