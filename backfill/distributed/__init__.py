"""Multi-machine backfill: a job's shards as tasks on Dask, a Kubernetes Indexed Job or an AWS Batch array.

store.py keeps the job's state (plan, per-shard leases and checkpoints) in a directory or
s3://; plan.py plans the shards; lease.py is the protocol that keeps two attempts at a shard
from copying a version twice; shard.py runs one attempt with the ordinary pipeline; local.py
and dask.py run many (here, or on Dask), job.py adds up their outcomes, merge.py merges the
shard files into one manifest.
"""
