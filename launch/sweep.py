"""Label-efficiency curves: fine-tune at several label fractions for several initialisations and seeds, evaluate
every point, and plot PA-MPJPE (PA-MPVPE for the MANO head) against the fraction (TempCLR Fig. 5 style):

    python launch/sweep.py --config launch/configs/finetune_freihand_rn50_mano.yaml \
        --eval-data shards/freihand_eval --dataset freihand \
        --fractions 0.05 0.1 0.2 0.4 1.0 --inits runs/tempclr_hanco_rn50/encoder.safetensors imagenet random \
        --seeds 0 1 2 --out runs/sweep [--set section.key=value ...]

Each point is a fine-tuning run `OUT/frac-<f>_init-<name>_seed-<s>` (its evaluation in `evaluation/`); a point
with results is skipped when the command runs again, an interrupted one resumes from its last checkpoint. An
initialisation is random, imagenet, the encoder.safetensors of a pre-training run (named after the run's
directory) or NAME=PATH. At the end: OUT/curves.png, OUT/curves.md (the table) and OUT/curves.json.

    --point ID|INDEX   run one point only (what a SLURM array task runs)
    --slurm            write OUT/sweep.sbatch, one array task per unfinished point (launch/slurm/sweep.sbatch
                       with the arguments filled in); `sbatch OUT/sweep.sbatch`, then rerun with --plot-only
    --plot-only        draw the curves and the table from the points evaluated so far

Also `handclr sweep` with the same flags.
"""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
