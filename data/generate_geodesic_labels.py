"""Stage 0 for your own scans: expand the 7-point annotations into geodesic seed labels.

The one stage-0 entry point for data of any scanner, over :func:`utilities.workflow.stage0.generate_geodesic_labels`:
no default names a dataset (the data flags are required), ``--style`` picks the paper's two
variants (``vs``: no voxel is zeroed, which suits any scan; ``brats``: the voxels at the
image's minimum, a skull-stripped background, are set to background), and ``--intensity``
normalises each lesion's box before the geodesic distance. Its default is the normalisation
chosen on the dataset family's development members at raw scanner intensities
(:data:`utilities.method.intensity.SCAN_DEFAULT`, docs/results/stage0_intensity.md); ``--intensity
none`` with ``--style vs`` or ``brats`` gives exactly what ``data/VS/generate_geodesic_labels.py``
or ``data/BraTS/generate_geodesic_labels.py`` give. The settings are recorded in
``<path_geodesic>/weight{w}_threshold{t}/stage0_settings.json``.

Example::

    python data/generate_geodesic_labels.py --dataset_split ./splits/my_split.csv \\
        --path_images ./data/MY/image/ --image_postfix T2 \\
        --path_anno_7points ./data/MY/annotation_7points/ --path_geodesic ./data/MY/geodesic/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's packages first

from utilities.data.dataset_file import add_dataset_flag, parse_with_dataset
from utilities.method.defaults import GEODESIC_THRESHOLD, GEODESIC_WEIGHT
from utilities.method.intensity import SCAN_DEFAULT
from utilities.workflow.stage0 import STYLES, build_parser, run_parsed

DEFAULTS = {
    "anno_7points_postfix": "7points",
    "label_postfix": "Label",
    "geodesic_weight": GEODESIC_WEIGHT,
    "geodesic_threshold": GEODESIC_THRESHOLD,
    "intensity": SCAN_DEFAULT,
}


def parser() -> argparse.ArgumentParser:
    """The shared stage-0 flags (data flags required, or named by ``--dataset``) plus ``--style``."""
    p = build_parser(DEFAULTS, __doc__.splitlines()[0])
    add_dataset_flag(p)
    p.add_argument("--style", choices=sorted(STYLES), default="vs",
                   help="vs: the paper's VS stage 0 (nothing zeroed; any scan); brats: also the voxels at the "
                        "image's minimum (a skull-stripped background) are background")
    return p


def main(argv: list[str] | None = None) -> Path:
    """Parse the arguments and expand every subject; returns the output folder."""
    args = parse_with_dataset(parser(), argv, optional=("labels",))
    return run_parsed(args, zero_at_min=STYLES[args.style])


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
