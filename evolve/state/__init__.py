"""The state of a run on the shared filesystem: the store (run-folder layout), the journal,
locks and atomic files. Torch-free. May import: evolve.config only.
"""
