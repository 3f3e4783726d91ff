"""Launching trainings: the launcher (job arrays through submitit, reattach, resubmit),
the executors (local, debug, Slurm) and job-state queries (sacct, squeue, local).

May import: evolve.state, evolve.config. It submits the job it is given; it never imports it.
"""
