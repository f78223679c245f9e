"""Where :func:`kdna.train.train_classifier` logs: ``metrics.csv`` and TensorBoard events, rank 0
only."""

from __future__ import annotations

import csv
from pathlib import Path

from kdna._extras import require

__all__ = ["MetricsLogger"]


class MetricsLogger:
    """Appends each row to ``log_dir/metrics.csv`` (header first) and, with ``tensorboard``,
    writes its values as scalars at the row's ``step``. Inactive (``active=False``, every rank
    but 0) it writes nothing at all."""

    def __init__(self, log_dir: Path, tensorboard: bool, active: bool) -> None:
        self.active, self.writer = active, None
        self.csv = log_dir / "metrics.csv"
        if active:
            log_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:  # tensorboard is a core dependency; say so if it is missing
                require("tensorboard", None, "TrainConfig(tensorboard=True)")
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(log_dir))

    def log(self, row: dict[str, float]) -> None:
        if not self.active:
            return
        new = not self.csv.exists()
        with open(self.csv, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "step"):
                    self.writer.add_scalar(key, value, row["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
