"""Pre-emption: SIGTERM / SIGUSR1 (SLURM) finish the current step on every rank, then checkpoint and exit 0."""

from __future__ import annotations

import logging
import signal

import torch
import torch.distributed as dist

log = logging.getLogger("handclr.train")


class StopFlag:
    """Installs the handlers when built (in the process that trains, never at import)."""

    def __init__(self) -> None:
        self.raised = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handler)

    def _handler(self, signum, frame) -> None:
        log.warning("received signal %d: finishing this step, then checkpoint and exit", signum)
        self.raised = True

    def agreed(self, device: torch.device) -> bool:
        """True on every rank as soon as any rank got the signal (so all ranks save together)."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.raised
        flag = torch.tensor([1.0 if self.raised else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
