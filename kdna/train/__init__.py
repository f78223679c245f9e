"""Training and evaluation: the reference recipe, done so that it really trains and resumes.

* :func:`fit`, :class:`TrainConfig` (:mod:`kdna.train.loop`): the training loop;
* :func:`evaluate`, :func:`recalibrate_batchnorm` (:mod:`kdna.train.evaluate`);
* :func:`save_checkpoint`, :func:`load_checkpoint` (:mod:`kdna.train.checkpoint`);
* :mod:`kdna.train.distributed`: joining a ``torchrun`` run.
"""

from kdna.train import distributed
from kdna.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from kdna.train.evaluate import Metrics, evaluate, recalibrate_batchnorm
from kdna.train.loop import NonFiniteLossError, TrainConfig, TrainResult, fit

__all__ = ["Metrics", "NonFiniteLossError", "TrainConfig", "TrainResult", "distributed",
           "evaluate", "fit", "load_checkpoint", "recalibrate_batchnorm", "rng_state",
           "save_checkpoint", "set_rng_state"]
