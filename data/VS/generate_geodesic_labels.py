"""Stage 0 for VS: expand the 7-point annotations into geodesic seed labels.

Thin command line over :func:`utilities.workflow.stage0.generate_geodesic_labels`, with the VS defaults.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's packages first

from utilities.data.dataset_file import add_dataset_flag, parse_with_dataset
from utilities.method.defaults import GEODESIC_THRESHOLD, GEODESIC_WEIGHT
from utilities.workflow.stage0 import build_parser, run_parsed

DEFAULTS = {
    "dataset_split": "./splits/split_VS.csv",
    "path_images": "./data/VS/image_crop/",
    "image_postfix": "T2",
    "path_labels": "./data/VS/label_crop/",
    "label_postfix": "Label",
    "path_anno_7points": "./data/VS/annotation_7points/",
    "anno_7points_postfix": "7points",
    "path_geodesic": "./data/VS/geodesic/",
    "geodesic_weight": GEODESIC_WEIGHT,
    "geodesic_threshold": GEODESIC_THRESHOLD,
}


def main(argv: list[str] | None = None) -> Path:
    """Parse the arguments and expand every subject; returns the output folder."""
    parser = build_parser(DEFAULTS, __doc__.splitlines()[0])
    add_dataset_flag(parser)
    args = parse_with_dataset(parser, argv, optional=("labels",), flags=("path_geodesic",))
    return run_parsed(args, zero_at_min=False)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
