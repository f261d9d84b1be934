"""Shared code of the PA-Seg scripts: losses, metrics, TorchIO loaders, I/O and training helpers."""
