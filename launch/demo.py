"""The demo (make demo): synthetic world -> shards -> TempCLR pre-training -> fine-tuning at 10 % labels from the
pre-trained encoder and from random initialisation (3 seeds each) -> evaluation on held-out sequences ->
embedding report -> OUT/report.md.

    python launch/demo.py [--out runs/demo] [--minutes 15] [--seed 0] [--workers 2] [--ablations] [--curves]

`--minutes` scales every budget together (15: about 15 minutes on 2 CPU cores); `--seed` changes the world.
A rerun resumes: stages whose outputs exist are skipped (delete OUT to start over). Also `handclr demo`.
"""

from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
