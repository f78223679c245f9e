"""Data: classification sets by name or folder, synthetic shapes for dense prediction, and
downloads that happen only when asked for.

* :func:`load_data` (:mod:`kdna.data.classification`): train, validation and test sets in one
  call, from a data set name or a folder of images (:mod:`kdna.data.folders`: every layout it
  accepts), with ``sources`` that say where each split came from;
* :func:`write_example_folder` (:mod:`kdna.data.examples`): folders of real packaged images
  (MNIST digits, LFW faces) in the ``train/`` + ``test/`` layout, written offline;
* :func:`benchmark_results` (:mod:`kdna.data.results_files`): a committed benchmark table, from
  the checkout, the cache or the repository (Colab);
* :func:`source_key` (:mod:`kdna.data.keys`): a cache key for a data set name or a folder's
  content (not its path);
* :class:`ShapesDataset`, :func:`penn_fudan` (:mod:`kdna.data.shapes`): detection and
  segmentation data;
* :func:`scan_images`, :class:`BadImageError` (:mod:`kdna.data.imagefiles`): unreadable
  images, named with their path and reason;
* :func:`analysis_images` (:mod:`kdna.data.photos`): varied offline images for analyses
  (crops of every offline photo, faces, digits), and :func:`~kdna.data.photos.photo_crops`;
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
from kdna.data.examples import write_example_folder
from kdna.data.imagefiles import BadImageError, scan_images
from kdna.data.keys import source_key
from kdna.data.online import require_online
from kdna.data.photos import AnalysisImages, analysis_images
from kdna.data.results_files import benchmark_results

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "AnalysisImages", "BadImageError", "DataSplits",
           "analysis_images", "benchmark_results", "cache_root", "list_datasets", "load_data",
           "require_online", "scan_images", "source_key", "write_example_folder"]
