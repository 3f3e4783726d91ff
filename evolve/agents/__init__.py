"""The model-served side of the loop: the client and the local server, prompts, the
researcher, engineer, analyzer and summarizer roles, the model-free analyzer, and the cognition
base with its retrieval.

May import: evolve.gates (novelty, the engineer's repairs), evolve.model, evolve.state,
evolve.config.
"""
