"""The copy pipeline: shards → listers → copiers → one checkpoint writer, on bounded streams."""
