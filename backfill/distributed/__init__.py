"""Multi-machine backfill: a job's shards as tasks on Dask, a Kubernetes Indexed Job or an AWS Batch array.

state.py keeps the job's state (plan, per-shard leases and checkpoints); shard.py runs one
attempt at one shard with the ordinary pipeline; engine.py runs many (here or on Dask).
"""
