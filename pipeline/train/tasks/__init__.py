"""A task is the only difference between runs: what model is built, how one effective batch becomes
gradients, what is validated and what is exported. The Trainer does everything else."""

from pipeline.train.tasks.pretrain import PretrainTask

__all__ = ["PretrainTask"]
