"""Sweeps: grids of trainings over initialization x depth x width x seeds, run as batched
tasks on local processes or a Dask cluster (:mod:`initlab.sweeps.runner`)."""

from initlab.sweeps.grid import Grid, Task

__all__ = ["Grid", "Task"]
