"""Data: classification sets by name or folder, synthetic shapes for dense prediction, and
downloads that happen only when asked for.

* :func:`load_data` (:mod:`kdna.data.classification`): train and validation sets in one call;
* :class:`ShapesDataset`, :func:`penn_fudan` (:mod:`kdna.data.shapes`): detection and
  segmentation data;
* :func:`scan_images`, :class:`BadImageError` (:mod:`kdna.data.imagefiles`): unreadable
  images, named with their path and reason;
* :func:`probe_images` (:mod:`kdna.data.probe`): diverse offline images for analyses;
* :func:`require_online` (:mod:`kdna.data.online`): fail at once, offline, with the way out;
* :func:`cache_root` (:mod:`kdna.data.cache`): the one cache folder, ``$KDNA_CACHE`` or
  ``~/.cache/kdna``, never relative to the working directory.
"""

from kdna.data.cache import cache_root
from kdna.data.classification import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataSplits,
    list_datasets,
    load_data,
)
from kdna.data.imagefiles import BadImageError, scan_images
from kdna.data.online import require_online
from kdna.data.probe import ProbeImages, probe_images

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "BadImageError", "DataSplits", "ProbeImages",
           "cache_root", "list_datasets", "load_data", "probe_images", "require_online",
           "scan_images"]
