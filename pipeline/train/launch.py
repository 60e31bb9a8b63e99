"""The command line every training entry point shares (launch/pretrain.py, launch/finetune.py): the same flags
under `accelerate launch`, `torchrun` and plain `python`, and errors a user can cause as one line."""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.errors import HandclrError
from pipeline.train.config import load_config
from pipeline.train.trainer import train


def main(argv: list[str] | None, name: str, doc: str, forced: tuple[str, ...] = ()) -> int:
    """`forced`: overrides applied before the user's (`task=finetune` for launch/finetune.py)."""
    parser = argparse.ArgumentParser(prog=name, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="launch/configs/<recipe>.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--resume", metavar="latest|PATH", help="continue from a checkpoint of this run")
    parser.add_argument("--report-to", choices=("tensorboard", "wandb", "none"), help="overrides logging.report_to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        train(load_config(args.config, [*forced, *args.overrides]), resume=args.resume, report_to=args.report_to)
    except HandclrError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    return 0
