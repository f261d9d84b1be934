"""Convert a checkpoint between the authors' published layout and ours, in both directions
(the key mapping: :mod:`networks.published`; reading and writing: :mod:`utilities.models.checkpoints`).

Command line::

    python convert_checkpoint.py --input CP_published.pth --output CP_best.pth \\
        --network U_Net2D5 --to ours
"""
from __future__ import annotations

import sys
from pathlib import Path

from networks import NETWORKS
from utilities.core.arguments import ArgumentParser
from utilities.data.io import check_overwrite
from utilities.models.checkpoints import convert_checkpoint

__all__ = ["main"]


def main(argv: list[str] | None = None) -> Path:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="state dict to convert (.pth)")
    p.add_argument("--output", required=True, help="converted state dict to write (.pth)")
    p.add_argument("--network", required=True, choices=sorted(NETWORKS), help="the network it holds")
    p.add_argument("--to", required=True, choices=["ours", "published"], help="layout to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = p.parse_args(argv)
    check_overwrite([args.output], "--output", args.overwrite)
    out = convert_checkpoint(args.input, args.output, args.network, args.to)
    print(f"written {out} ({args.network}, {args.to} layout)")
    return out


if __name__ == "__main__":
    from utilities.workflow.cli import run_main

    sys.exit(run_main(main))
