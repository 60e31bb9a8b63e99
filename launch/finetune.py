"""Fine-tuning entry point (task: finetune), under the same three launchers as pre-training:

    accelerate launch launch/finetune.py --config launch/configs/finetune_freihand_rn50_mano.yaml
    torchrun --nproc_per_node N launch/finetune.py --config ...
    python launch/finetune.py --config ... --set finetune.init=runs/pretrain/encoder.safetensors

`finetune.init`: random | imagenet | the encoder.safetensors of a pre-training run. The run directory
(`checkpoint.dir`) gets checkpoints, logs, `data_split.json` (the validation and label-fraction rules),
`best.safetensors` (best validation PA-MPJPE) and `model.safetensors` (last). Evaluate with launch/evaluate.py.
"""

from __future__ import annotations

import sys

from pipeline.train.launch import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], "finetune", __doc__, forced=("task=finetune",)))
