"""Training and evaluation: the reference recipe, done so that it really trains and resumes.

* :func:`fit`, :class:`TrainConfig` (:mod:`kdna.train.loop`): the training loop;
* :func:`build_optimizer`, :func:`warmup_cosine` (:mod:`kdna.train.schedule`): the optimiser
  and learning-rate schedule, shared with :func:`kdna.dense.train.train_dense`;
* :func:`evaluate`, :func:`recalibrate_batchnorm` (:mod:`kdna.train.evaluate`);
* :func:`save_checkpoint`, :func:`load_checkpoint`, :func:`check_writable`
  (:mod:`kdna.train.checkpoint`);
* :class:`TrainingInterrupted` (:mod:`kdna.train.interrupt`): Ctrl-C or SIGTERM, saved;
* :mod:`kdna.train.distributed`: joining a ``torchrun`` run.

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
from kdna.train.evaluate import Metrics, evaluate, recalibrate_batchnorm
from kdna.train.interrupt import TrainingInterrupted
from kdna.train.loop import NonFiniteLossError, TrainConfig, TrainResult, fit
from kdna.train.schedule import build_optimizer, warmup_cosine

__all__ = ["Metrics", "NonFiniteLossError", "TrainConfig", "TrainResult", "TrainingInterrupted",
           "build_optimizer", "check_writable", "distributed", "evaluate", "fit",
           "load_checkpoint", "recalibrate_batchnorm",
           "rng_state", "save_checkpoint", "set_rng_state", "warmup_cosine"]
