"""Training and evaluation: the reference recipe, done so that it really trains and resumes.

* :func:`train_classifier`, :class:`TrainConfig` (:mod:`kdna.train.loop`): the training loop
  (:func:`kdna.dense.train.train_dense` is its dense-prediction counterpart);
* :func:`build_optimizer`, :func:`warmup_cosine` (:mod:`kdna.train.schedule`): the optimiser
  and learning-rate schedule, shared with :func:`kdna.dense.train.train_dense`;
* :func:`evaluate`, :func:`recalibrate_batchnorm` (:mod:`kdna.train.evaluate`);
* :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`check_writable`
  (:mod:`kdna.train.checkpoint`);
* :class:`TrainingInterrupted` (:mod:`kdna.train.interrupt`): Ctrl-C or SIGTERM, saved;
* :func:`autocast_for`, :func:`loader_options` (:mod:`kdna.train.devices`): the mixed
  precision (bf16 from compute capability 8.0, fp16 with a scaler below) and loader workers
  of a device;
* :mod:`kdna.train.distributed`: joining a ``torchrun`` run.

Fine-tuning a pretrained network on a data set (methods, protocol, comparisons) is its own
job, one layer up: :mod:`kdna.finetune`.

Accuracies in every result (:class:`Metrics`, :class:`TrainResult`) are fractions in [0, 1].
"""

from kdna.train import distributed
from kdna.train.checkpoint import (
           check_writable,
           load_checkpoint,
           rng_state,
           save_checkpoint,
           set_rng_state,
)
from kdna.train.devices import Precision, autocast_for, loader_options, loader_workers
from kdna.train.evaluate import Metrics, evaluate, recalibrate_batchnorm
from kdna.train.interrupt import TrainingInterrupted
from kdna.train.loop import NonFiniteLossError, TrainConfig, TrainResult, train_classifier
from kdna.train.schedule import build_optimizer, warmup_cosine

__all__ = ["Metrics", "NonFiniteLossError", "Precision", "TrainConfig", "TrainResult",
           "TrainingInterrupted", "autocast_for", "build_optimizer", "check_writable",
           "distributed", "evaluate", "load_checkpoint", "loader_options",
           "loader_workers", "recalibrate_batchnorm", "rng_state", "save_checkpoint",
           "set_rng_state", "train_classifier", "warmup_cosine"]
