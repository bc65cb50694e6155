"""backfill: copy an S3 bucket with all its versions into a replica, resumably."""

__version__ = "0.1.0"
