"""Pre-training entry point. The same file runs under all three launchers:

    accelerate launch launch/pretrain.py --config launch/configs/<recipe>.yaml      # cluster, multi-node
    torchrun --nproc_per_node N launch/pretrain.py --config ...                      # one multi-GPU box
    python launch/pretrain.py --config ...                                           # one CPU or GPU

Overrides: `--set section.key=value` (repeatable; the value is YAML). `--set checkpoint.dir=PATH` decides where
checkpoints, logs, the saved config and the exported encoder go. `--resume latest|PATH` continues a run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.errors import HandclrError
from pipeline.train.config import load_config
from pipeline.train.trainer import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="launch/configs/<recipe>.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--resume", metavar="latest|PATH", help="continue from a checkpoint of this run")
    parser.add_argument("--report-to", choices=("tensorboard", "wandb", "none"), help="overrides logging.report_to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        train(load_config(args.config, args.overrides), resume=args.resume, report_to=args.report_to)
    except HandclrError as exc:
        print(f"pretrain: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
