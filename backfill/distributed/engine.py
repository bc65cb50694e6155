"""The names distributed.commands imports from here, now in their own modules (job, local, dask, merge).

Kept so that commands.py need not change in the same step: import from those modules instead.
"""

from .dask import run_dask
from .job import JobResult
from .local import run_here
from .merge import merge

__all__ = ["JobResult", "merge", "run_dask", "run_here"]
