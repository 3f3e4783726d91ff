"""The training job: the loop, the engines (torch, DeepSpeed), presets and the training
config, data (corpora, tokenizers, shards), evaluation (bits per byte, MQAR, lm-eval) and the
terminal progress of `evolve train`.

Runs on compute nodes. May import: evolve.model, evolve.kernels, evolve.state,
evolve.config; never evolve.search, evolve.agents, evolve.gates, evolve.views or evolve.cli.
"""
