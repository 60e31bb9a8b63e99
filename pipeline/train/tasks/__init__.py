"""A task is the only difference between runs: what model is built, how one effective batch becomes
gradients, what is validated and what is exported. The Trainer does everything else."""

from pipeline.train.tasks.base import Task
from pipeline.train.tasks.pretrain import PretrainTask

__all__ = ["PretrainTask", "Task", "build_task"]


def build_task(cfg) -> Task:
    """The config's task (`task: pretrain | finetune`)."""
    if cfg.task == "finetune":
        from pipeline.train.tasks.finetune import FinetuneTask  # the MANO and evaluation stack, when needed

        return FinetuneTask(cfg)
    return PretrainTask(cfg)
