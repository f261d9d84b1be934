"""Data preparation scripts (stage 0, annotations, dataset conversion) and their shared readers."""
