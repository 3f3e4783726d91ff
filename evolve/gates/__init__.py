"""The CHECK step: check_file / check_candidate and the verdict types, the static, runtime,
cost and novelty gates, and the sandbox (seccomp, resource limits) they run in.

May import: evolve.train (presets: the parameter budget), evolve.model, evolve.kernels,
evolve.state, evolve.config.
"""
