"""Benchmark of the fastkda forward against fla and FlashKDA: `python -m fastkda.bench`."""
