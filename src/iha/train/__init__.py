"""Training engine: configs, data, optimiser, checkpoints, distributed training, logs and plots.

Split by concern (as in torchtitan): :mod:`~iha.train.config` (typed TOML configs),
:mod:`~iha.train.data` (sources, packing, resumable streams), :mod:`~iha.train.optim` (AdamW,
warmup + cosine), :mod:`~iha.train.checkpoint` (atomic checkpoints),
:mod:`~iha.train.distributed` (DDP / FSDP2 through torchrun), :mod:`~iha.train.metrics`
(metrics.jsonl, TensorBoard, progress), :mod:`~iha.train.plot` and :mod:`~iha.train.trainer`
(the loop that wires them).
"""

from iha.train.config import ConfigError, RunConfig, load_config
from iha.train.trainer import Trainer, TrainResult, train

__all__ = ["ConfigError", "RunConfig", "TrainResult", "Trainer", "load_config", "train"]
