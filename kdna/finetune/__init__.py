"""Fine-tune a pretrained network on a data set: the kit's one fine-tuning path.

``kdna.finetune(arch_or_model, data, method=..., lr=..., steps=...)`` (:func:`finetune`,
:mod:`kdna.finetune.job`) trains one method and returns a :class:`FinetuneResult`; this
module is callable, so ``kdna.finetune(...)`` and ``kdna.finetune.finetune(...)`` are the same
call. Everything that fine-tunes goes through it or its parts:

* :mod:`kdna.finetune.methods`: the methods in one registry, :data:`METHODS` (linear probe,
  norms + head, BitFit, full, LoRA, KernelDNA in place, KernelDNA shared), each stating
  exactly what it trains; :func:`prepare`;
* :mod:`kdna.finetune.protocol`: :class:`Protocol`, what a run holds fixed, and its splits;
* :mod:`kdna.finetune.runs`: one run, :func:`train_method` (frozen BatchNorm statistics, no
  weight decay on norms, biases, static scales or gates);
* :mod:`kdna.finetune.compare`: :func:`compare_methods`, many methods under one protocol,
  each at the rate it chose on validation, tested over seeds; :mod:`kdna.finetune.results`,
  their tables;
* :mod:`kdna.finetune.committed`: what the committed benchmark chose (the defaults);
* :mod:`kdna.finetune.task`: :func:`load_task`, a saved task back on its base, and predictions;
* :mod:`kdna.finetune.report`: a fine-tuning run's report and confusion matrix.
"""

import sys
import types

from kdna.finetune.committed import default_lr, default_method
from kdna.finetune.compare import Comparison, compare_methods, train_at
from kdna.finetune.finetuned import FinetuneResult
from kdna.finetune.job import finetune
from kdna.finetune.methods import METHODS, FinetuneMethod, get_method, list_methods, prepare
from kdna.finetune.protocol import Protocol
from kdna.finetune.results import MethodSummary, RunResult
from kdna.finetune.runs import train_method
from kdna.finetune.task import Task, load_task

__all__ = ["METHODS", "Comparison", "FinetuneMethod", "FinetuneResult", "MethodSummary",
           "Protocol", "RunResult", "Task", "compare_methods", "default_lr", "default_method",
           "finetune", "get_method", "list_methods", "load_task", "prepare", "train_at",
           "train_method"]


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`finetune` (``kdna.finetune(...)``)."""

    def __call__(self, *args, **kwargs) -> FinetuneResult:
        return finetune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
