"""Pre-training entry point. The same file runs under all three launchers:

    accelerate launch launch/pretrain.py --config launch/configs/<recipe>.yaml      # cluster, multi-node
    torchrun --nproc_per_node N launch/pretrain.py --config ...                      # one multi-GPU box
    python launch/pretrain.py --config ...                                           # one CPU or GPU

Overrides: `--set section.key=value` (repeatable; the value is YAML). `--set checkpoint.dir=PATH` decides where
checkpoints, logs, the saved config and the exported encoder go. `--resume latest|PATH` continues a run.
"""

from __future__ import annotations

import sys

from pipeline.train.launch import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "pretrain", __doc__))
