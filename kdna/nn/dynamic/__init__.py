"""The other dynamic convolutions, CondConv, DY-Conv and ODConv, as drop-ins for ``nn.Conv2d``.

They are layers, so they live with the layers: ``torch.nn``-like modules beside KernelDNA's
own (:mod:`kdna.nn`), as timm keeps its ``CondConv2d`` in ``layers/`` beside its other layers,
depending on nothing above the method (:mod:`kdna._checks`, :func:`kdna.nn.functional.
per_sample_conv2d`). Whatever uses them sits above: :mod:`kdna.bench` builds networks from them
and measures them beside KernelDNA (:func:`kdna.bench.baselines.dynamic_network`,
:func:`kdna.bench.baselines.build_baseline`), and the notebooks contrast them with it. A
separate ``kdna/baselines/`` package would have held four modules of layers and builders that
only ``kdna.bench`` uses; the builders, which choose networks to measure, stay there.

* :class:`CondConv2d` and :class:`DynamicConv2d` (:mod:`kdna.nn.dynamic.experts`, with their
  shared base :class:`ExpertConv2d`, which says why each sample needs its own kernel): K expert
  kernels mixed per sample;
* :class:`ODConv2d` (:mod:`kdna.nn.dynamic.odconv`): attention over the kernel's taps, input
  channels, filters and K kernels (:class:`ODAttention`).

Every one is built from an ``nn.Conv2d`` with ``from_conv``, which copies its geometry and
kernel.
"""

from kdna.nn.dynamic.experts import CondConv2d, DynamicConv2d, ExpertConv2d
from kdna.nn.dynamic.odconv import ODAttention, ODConv2d

__all__ = ["CondConv2d", "DynamicConv2d", "ExpertConv2d", "ODAttention", "ODConv2d"]
