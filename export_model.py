"""Pack a trained PA-Seg model into one file (a zip) that ``inference.py --model`` predicts from.

The package holds the weights (the best checkpoint or the one ``--epoch_inf`` names; an SCM run:
both networks), what inference needs (network, patch size, normalisation, class count), the
versions of this project and of torch, and a model card: the training data's fingerprint
(number of cases, spacing, intensity statistics), the validation score of each checkpoint and
the command that trained it. ``--checkpoint`` packs a single ``.pth`` instead, e.g. a
checkpoint released with the published PA-Seg code (converted to this project's layout).
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from networks import NETWORKS, check_network_shape
from utilities.core.arguments import ArgumentParser, Inert, warn_inert_flags
from utilities.core.logs import setup_logger
from utilities.data.dataset_file import read_dataset
from utilities.data.io import check_overwrite
from utilities.data.layout import RunLayout
from utilities.models.model_package import (
    DEFAULT_EPOCH_INF,
    ModelSpec,
    data_fingerprint,
    export_package,
    scm_specs,
    spec_from_checkpoint,
    spec_from_run,
)
from utilities.workflow.cli import check_spatial_shape, epoch_inf_name

__all__ = ["export_model", "main"]


def export_model(output: str | Path, model_dir: str | Path | None = None, network: str | None = None,
                 epoch_inf: str = "best", checkpoint: str | Path | None = None,
                 spatial_shape: Sequence[int] | None = None, fingerprint: bool = True,
                 overwrite: bool = False, training_data: Sequence[str] | None = None) -> dict[str, Any]:
    """Write the package of a run folder (or of one checkpoint) to ``output``; returns its manifest.
    ``training_data``: the split, image folder and image postfix the model card's fingerprint
    reads (default: those recorded with the run's checkpoint)."""
    logger = setup_logger(None)
    output = Path(output)
    if output.suffix != ".zip":
        raise ValueError(f"--output {output} must end in .zip")
    check_overwrite([output], "--output", overwrite)
    if (model_dir is None) == (checkpoint is None):
        raise ValueError("pass either --model_dir (a training run) or --checkpoint (one .pth file)")
    specs: list[ModelSpec]
    if checkpoint is not None:
        specs = [spec_from_checkpoint(checkpoint, network, spatial_shape)]
    else:
        scm = None if epoch_inf.endswith(("_model1", "_model2")) else scm_specs(model_dir, epoch_inf, network,
                                                                                 spatial_shape)
        specs = scm if scm is not None else [spec_from_run(model_dir, network, epoch_inf, spatial_shape)]
    for spec in specs:
        if spec.spatial_shape is not None:
            origin = spec.shape_origin(spatial_shape is not None)
            check_network_shape(spec.network, check_spatial_shape(spec.spatial_shape, origin), origin)
    if checkpoint is None:
        _warn_unfinished(specs, logger)
    args = next((s.meta["run_args"] for s in specs if s.meta.get("run_args")), None)
    if training_data is not None:
        args = dict(zip(("dataset_split", "path_images", "image_postfix"), training_data))
    if not fingerprint:
        data = {"available": False, "reason": "left out by --no_fingerprint"}
    elif args is None:
        data = {"available": False, "reason": "the training arguments are not recorded with the checkpoint"}
        logger.warning("model card: no training arguments beside %s; the training data and command are not recorded",
                       specs[0].source)
    else:
        data = data_fingerprint(args["dataset_split"], args["path_images"], args["image_postfix"])
        if not data.get("available"):
            logger.warning("model card: no training data fingerprint (%s)", data.get("reason"))
    manifest = export_package(specs, output, data)
    for m in manifest["models"]:
        value = m.get("value")
        score = f", validation {m['metric']} {value:.4f}" if isinstance(value, float) else ""
        logger.info("packed %s: %s from %s (epoch %s%s), window %s", m["name"], m["network"], m["checkpoint"],
                    m.get("epoch", "?"), score, m["spatial_shape"])
    logger.info("written %s", output)
    return manifest


def _warn_unfinished(specs: Sequence[ModelSpec], logger: logging.Logger) -> None:
    """A warning for a run folder that holds no final checkpoint (``CP_final*.pth``, written when
    the run ends): a stopped or still running run, whose best checkpoint may not be its last."""
    for run in dict.fromkeys(Path(spec.weights).parents[1] for spec in specs):   # <model_dir>/<network>
        layout = RunLayout(run.parent, run.name)
        if not any(kind.startswith("final") for kind in layout.checkpoint_kinds()):
            logger.warning("%s holds no CP_final*.pth: the run stopped (or is still training) before its last "
                           "epoch, and the package holds the checkpoints it had written by then", layout.models)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_dir", default=None, help="run folder given to the training script")
    p.add_argument("--network", default=None, choices=sorted(NETWORKS),
                   help="network (default: the one run in --model_dir; SCM: that of model 1; --checkpoint: read "
                        "from the file)")
    p.add_argument("--epoch_inf", type=epoch_inf_name, default=DEFAULT_EPOCH_INF,
                   help="checkpoint CP_<epoch_inf>.pth; an SCM run packs CP_<epoch_inf>_model1 and _model2 unless "
                        "it names one (best_model1)")
    p.add_argument("--checkpoint", default=None,
                   help="pack this .pth (ours or the authors' released one) instead of a run folder")
    p.add_argument("--spatial_shape", type=int, nargs=3, default=None,
                   help="patch size (X Y Z) for inference (default: the run's; needed for a bare checkpoint)")
    p.add_argument("--output", required=True, help="the package to write (.zip)")
    p.add_argument("--no_fingerprint", action="store_true",
                   help="do not read the training images for the model card's data fingerprint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--dataset", default=None, metavar="FILE",
                   help="dataset file (docs/guide/own_data.md) whose split, images and image_postfix the model "
                        "card's fingerprint reads, instead of the paths recorded with the run")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    warn_inert_flags(parser, argv, args, [Inert(("epoch_inf",), lambda a: a.checkpoint is not None,
                                                "with --checkpoint: that file is packed")])
    shape = check_spatial_shape(args.spatial_shape) if args.spatial_shape is not None else None
    if args.dataset is not None and args.no_fingerprint:
        raise ValueError("--dataset names the data the model card's fingerprint reads, which --no_fingerprint leaves "
                         "out; drop one of them")
    data = None if args.dataset is None else read_dataset(args.dataset).need("split", "images", "image_postfix")
    return export_model(args.output, args.model_dir, args.network, args.epoch_inf, args.checkpoint, shape,
                        not args.no_fingerprint, args.overwrite, data)


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
