"""Layer 1, the ground floor: the errors a user sees, text files read as data (CSV, JSON, Markdown
cells), the logger, the process (device, seeds, signals), torch.distributed and torch.compile glue,
and the runner of logged subprocesses. Nothing here knows about segmentation."""
