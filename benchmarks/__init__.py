"""Benchmarks: `python -m benchmarks run` (backfill beside s5cmd, aws s3 sync and rclone), `python -m benchmarks scale`
(10k vs 200k versions), `python -m benchmarks.copy` (one backfill copy). Results: benchmarks/RESULTS.md."""
