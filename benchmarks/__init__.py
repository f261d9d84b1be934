"""Benchmarks of the training step, the mCRF loss, data loading and inference (see BENCHMARKS.md)."""
