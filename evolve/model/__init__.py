"""The model around a candidate: the fixed backbone LM, the mixer contract, the design space of
mixer specs, their edits and rendering to code, and the hand-written baselines.

May import: evolve.kernels, evolve.config.
"""
