"""The state of a run on the shared filesystem: the layout (every file name of a run folder),
the store (creating, writing, locking), the journal and the candidate lifecycle, the read-model
(RunView), `evolve verify` requests, the site's result cache, locks and atomic files.
Torch-free. May import: evolve.config only.
"""
