"""Evaluate a fine-tuning run on a labelled shard set (every labelled frame once, no augmentation):

    python launch/evaluate.py --run runs/finetune_freihand_rn50_mano --data shards/freihand_eval \
        --dataset freihand --out runs/finetune_freihand_rn50_mano/evaluation [--weights best|last|PATH]

Writes results.json (metrics in mm / px, the setting), report.md (next to the papers' published numbers for
FreiHAND and HO-3D) and pck.png, per_joint.png, error_vs_time.png. Also `handclr evaluate` with the same flags.
"""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
