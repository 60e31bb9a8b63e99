"""Metrics of a run: a console line, the TensorBoard (or wandb) tracker, and two files in the run directory,
every record stamped with the wall-clock time: `train.log` (the console's messages, the package's warnings and
one line per recorded step) and `metrics.jsonl` (one JSON object per record). Only the main process writes;
every rank may call."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from accelerate import Accelerator
from tqdm import tqdm

LOG_FILE, METRICS_FILE = "train.log", "metrics.jsonl"


class MetricsLogger:
    def __init__(self, accelerator: Accelerator, run_dir: Path, report_to: str, every_steps: int,
                 progress_bar: bool, total_steps: int, initial_step: int, name: str) -> None:
        self.accelerator, self.report_to, self.every_steps = accelerator, report_to, every_steps
        self.main, self.total_steps, self.name = accelerator.is_main_process, total_steps, name
        self.bar = tqdm(total=total_steps, initial=initial_step, desc=name, disable=not (self.main and progress_bar))
        self._file = self._handler = None
        self._run_log = logging.getLogger(f"handclr.run.{name}")
        self._run_log.propagate = False  # the file only: the console gets the message from print()
        self._run_log.setLevel(logging.INFO)
        if self.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._handler = logging.FileHandler(run_dir / LOG_FILE, encoding="utf-8")
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            logging.getLogger("handclr").addHandler(self._handler)  # warnings of the whole package
            self._run_log.addHandler(self._handler)
            self._file = open(run_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def start(self, config: dict, message: str) -> None:
        """The run's hyper-parameters to the tracker, and the opening line to the console and the log."""
        if self.report_to != "none":
            self.accelerator.init_trackers(self.name, config=config)
        self.print(message)

    def print(self, message: str) -> None:
        if self.main:
            print(message, flush=True)
            self._run_log.info(message)

    def step(self, step: int, values: dict) -> None:
        """Called after every optimiser step; records every `every_steps` steps and at the last one."""
        self.bar.update(1)
        if step % self.every_steps and step != self.total_steps:
            return
        self.bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values.get('lr', 0.0):.2e}",
                             items_s=f"{values.get('items_per_s', 0.0):.0f}")
        self.record(step, values)

    def record(self, step: int, values: dict) -> None:
        """Values of any kind (training, validation, probe) at a step: tracker, log line and JSON line."""
        if self.report_to != "none":
            self.accelerator.log(values, step=step)
        if self.main:
            self._run_log.info("step %d %s", step, " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                                             for k, v in values.items()))
            self._file.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step, **values},
                                        default=float) + "\n")
            self._file.flush()

    def close(self) -> None:
        self.bar.close()
        if self.report_to != "none":
            self.accelerator.end_training()
        if self.main:
            self._file.close()
            logging.getLogger("handclr").removeHandler(self._handler)
            self._run_log.removeHandler(self._handler)
            self._handler.close()
