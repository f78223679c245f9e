"""Dense prediction: KernelDNA ResNets as backbones of torchvision's detectors and segmenters
(:mod:`kdna.dense.backbones`; the gates normalise with :class:`kdna.nn.FrozenBatchNorm1d`), and
their training and metrics (:mod:`kdna.dense.train`).

Needs the ``dense`` extra for the metrics (torchmetrics, pycocotools):
``pip install 'kdna[dense]'``.
"""

from kdna.dense.backbones import (
    ARCHS,
    TRUNKS,
    deeplabv3,
    faster_rcnn,
    mask_rcnn,
    resnet_fpn_backbone,
    resnet_trunk,
)
from kdna.dense.train import evaluate_detection, evaluate_segmentation, train_dense

__all__ = ["ARCHS", "TRUNKS", "deeplabv3", "evaluate_detection", "evaluate_segmentation",
           "faster_rcnn", "mask_rcnn", "resnet_fpn_backbone", "resnet_trunk", "train_dense"]
