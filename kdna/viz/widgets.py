"""Interactive explorers (ipywidgets) on top of :mod:`kdna.viz` and :mod:`kdna.analysis`.

Only notebooks import this module; the rest of kdna never imports ipywidgets. The figures are
built by plain functions (:mod:`kdna.viz.gates`, re-exported here; each returns a
``go.Figure``, titled, with labelled axes), so a notebook can show the same views statically
before the interactive cell.

:class:`RoutingExplorer` shows how a KernelDNA network routes one image: its prediction, the
input gate of a chosen child, the channels the gate boosts and suppresses most, the kernel
that gating amounts to for that image, and the gates of two images side by side.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn

from kdna._checks import positive_int
from kdna._extras import require
from kdna.analysis.routing import Routing, capture_routing, most_changed_channels
from kdna.viz.figures import image_predictions
from kdna.viz.gates import (
    changed_channels_html,
    effective_kernel_figure,
    gate_comparison_figure,
    gate_figure,
)

widgets = require("ipywidgets", "viz", "kdna.viz.widgets")  # ImportError naming kdna[viz]
go = require("plotly.graph_objects", "viz", "kdna.viz.widgets")

__all__ = ["Prediction", "RoutingExplorer", "changed_channels_html", "effective_kernel_figure",
           "gate_comparison_figure", "gate_figure"]

class Prediction(NamedTuple):
    label: int  # the predicted class index
    name: str  # its name in `classes`
    probability: float  # softmax probability of that class


def _show(output: widgets.Output, fig: go.Figure) -> None:
    """Put ``fig`` into ``output`` as a notebook would display it (no kernel needed)."""
    output.outputs = ({"output_type": "display_data", "data": fig._repr_mimebundle_(),
                       "metadata": {}},)


def _check_image(image: object, where: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3):
        shape = getattr(image, "shape", None)
        raise TypeError(f"{where} must be an HWC or HW uint8 numpy array, got "
                        f"{type(image).__name__} {getattr(image, 'dtype', '')} shape {shape}")
    return image


class RoutingExplorer:
    """Explore how ``model`` routes each of ``images``: pick an image (or upload one), a
    gated child, and a second image to compare with. Display ``explorer.widget``.

    Args:
        model: a classifier with gated KernelDNA children (converted or built with kdna).
        images: HWC (or HW) uint8 arrays.
        transform: array -> ``[C, H, W]`` tensor as the model expects (the same one the
            model was evaluated with); uploaded files are decoded with PIL into such arrays.
        classes: the class names, in the order of the model's outputs.
        labels: the true class of each image, if known (shown under the prediction).
        layer: the gated child shown first (default: the first in model order); a child
            whose gate varies between inputs shows routing, one that does not shows none.
        top_k: how many boosted / suppressed channels to list.
        filters: how many output filters the kernel view shows.

    The callbacks are plain methods (:meth:`select_image`, :meth:`select_layer`,
    :meth:`select_comparison`, :meth:`upload`); the current state is in ``index``, ``layer``,
    ``comparison``, ``prediction``, ``gate``, ``boosted``, ``suppressed``,
    ``comparison_gate`` and the ``figures`` shown.
    """

    def __init__(self, model: nn.Module, images: Sequence[np.ndarray],
                 transform: Callable[[np.ndarray], Tensor], *, classes: Sequence[str],
                 labels: Sequence[int] | None = None, layer: str | None = None, top_k: int = 5,
                 filters: int = 4) -> None:
        if not isinstance(images, Sequence) or not images:
            raise ValueError("RoutingExplorer needs a non-empty sequence of images")
        self.images = [_check_image(im, f"images[{i}]") for i, im in enumerate(images)]
        self.model, self.transform, self.classes = model, transform, list(classes)
        self.labels: list[int | None] = [None] * len(self.images) if labels is None else [
            int(label) for label in labels]
        if len(self.labels) != len(self.images) or not all(
                0 <= label < len(self.classes) for label in self.labels if label is not None):
            raise ValueError(f"labels must hold one class in [0, {len(self.classes)}) per image "
                             f"({len(self.images)} images), got {labels!r}")
        self.top_k, self.filters = positive_int("top_k", top_k), positive_int("filters", filters)
        self._routings: dict[int, Routing] = {}
        self._names: dict[int, str] = {}  # uploaded images' file names
        self.layers = self._routing(0).names
        if layer is not None and layer not in self.layers:
            raise ValueError(f"layer must be a gated child of the model, one of {self.layers}; "
                             f"got {layer!r}")
        self.index, self.comparison = 0, min(1, len(self.images) - 1)
        self.layer = self.layers[0] if layer is None else layer
        self.figures: dict[str, go.Figure] = {}
        self._quiet = False
        self._build_controls()
        self._update()

    # -- callbacks -------------------------------------------------------------------------

    def select_image(self, index: int) -> None:
        """Show image ``index`` (an uploaded image is appended to the images)."""
        self.index = self._check_index(index)
        self._sync(self._image_chooser, index)
        self._update()

    def select_layer(self, name: str) -> None:
        """Show the gate of the child ``name`` (one of ``layers``)."""
        if name not in self.layers:
            raise ValueError(f"no gated child named {name!r}; choose one of {self.layers}")
        self.layer = name
        self._sync(self._layer_chooser, name)
        self._update()

    def select_comparison(self, index: int) -> None:
        """Compare the current image's gate with image ``index``'s."""
        self.comparison = self._check_index(index)
        self._sync(self._comparison_chooser, index)
        self._update(comparison_only=True)

    def upload(self, data: bytes, name: str = "upload") -> int:
        """Add an image file's bytes (any format PIL reads), select it and return its index."""
        try:
            picture = Image.open(io.BytesIO(bytes(data)))
            picture.load()
        except (UnidentifiedImageError, OSError, TypeError):
            raise ValueError(f"could not read {name!r} as an image (PNG, JPEG or another format "
                             "PIL reads)") from None
        grey = all(im.ndim == 2 for im in self.images)
        self.images.append(np.asarray(picture.convert("L" if grey else "RGB")))
        self.labels.append(None)
        self._names[len(self.images) - 1] = name
        try:
            self._routing(len(self.images) - 1)
        except Exception:  # the transform or the model rejected it: forget the image
            self.images.pop()
            self.labels.pop()
            self._names.pop(len(self.images))
            raise
        options = self._options()
        for chooser in (self._image_chooser, self._comparison_chooser):
            self._sync(chooser, chooser.value, options=options)
        self.select_image(len(self.images) - 1)
        return self.index

    # -- state -----------------------------------------------------------------------------

    def _routing(self, index: int) -> Routing:
        if index not in self._routings:
            x = self.transform(self.images[index])
            if not isinstance(x, Tensor) or x.dim() != 3:
                raise TypeError(f"transform must return a [C, H, W] tensor, got "
                                f"{getattr(x, 'shape', type(x).__name__)}")
            routing = capture_routing(self.model, x[None])
            if routing.logits is None or routing.logits.shape != (1, len(self.classes)):
                shape = None if routing.logits is None else list(routing.logits.shape)
                raise ValueError(f"the model must return [1, {len(self.classes)}] logits (one "
                                 f"per class name) for one image, got {shape}")
            self._routings[index] = routing
        return self._routings[index]

    @property
    def prediction(self) -> Prediction:
        probabilities = torch.softmax(self._routing(self.index).logits[0], dim=0)
        label = int(probabilities.argmax())
        return Prediction(label, self.classes[label], float(probabilities[label]))

    @property
    def gate(self) -> Tensor:
        """The chosen child's gate ``[C_in]`` for the current image."""
        return self._routing(self.index).gates[self.layer][0]

    @property
    def comparison_gate(self) -> Tensor:
        return self._routing(self.comparison).gates[self.layer][0]

    def _check_index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int | np.integer) or not (
                0 <= index < len(self.images)):
            raise ValueError(f"image index must be an int in [0, {len(self.images)}), got "
                             f"{index!r}")
        return int(index)

    def _caption(self, index: int) -> str:
        label = self.labels[index]
        return (f"{index}: {self.classes[label]}" if label is not None
                else f"{index}: {self._names.get(index, 'image')}")

    def _options(self) -> list[tuple[str, int]]:
        return [(self._caption(i), i) for i in range(len(self.images))]

    # -- widgets ---------------------------------------------------------------------------

    def _build_controls(self) -> None:
        options = self._options()
        self._image_chooser = widgets.Dropdown(options=options, value=self.index,
                                               description="image")
        self._comparison_chooser = widgets.Dropdown(options=options, value=self.comparison,
                                                    description="compare with")
        self._layer_chooser = widgets.Dropdown(options=self.layers, value=self.layer,
                                               description="child")
        self._uploader = widgets.FileUpload(accept="image/*", multiple=False,
                                            description="your image")
        self._status = widgets.HTML()
        self._channels = widgets.HTML()
        self._outputs = {key: widgets.Output() for key in ("image", "gate", "kernel",
                                                           "comparison")}
        self._image_chooser.observe(self._on(self.select_image), "value")
        self._layer_chooser.observe(self._on(self.select_layer), "value")
        self._comparison_chooser.observe(self._on(self.select_comparison), "value")
        self._uploader.observe(self._on_upload, "value")
        out = self._outputs
        self.widget = widgets.VBox([
            widgets.HBox([self._image_chooser, self._layer_chooser, self._uploader]),
            self._status,
            widgets.HBox([out["image"], out["gate"]]),
            self._channels,
            out["kernel"],
            self._comparison_chooser,
            out["comparison"],
        ])

    def _on(self, method: Callable[[object], None]) -> Callable[[dict], None]:
        def handler(change: dict) -> None:
            if not self._quiet:
                method(change["new"])
        return handler

    def _on_upload(self, change: dict) -> None:
        if self._quiet or not change["new"]:
            return
        item = change["new"][0]
        try:
            self.upload(item["content"], item.get("name", "upload"))
            self._status.value = ""
        except Exception as error:  # shown to the user: a callback's exception would be lost
            self._status.value = f"<b>Upload failed:</b> {html.escape(str(error))}"
        self._sync(self._uploader, ())

    def _sync(self, control: widgets.Widget, value: object, options: list | None = None) -> None:
        """Set a control (and its options) without triggering its callback again."""
        self._quiet = True
        try:
            if options is not None:
                control.options = options
            control.value = value
        finally:
            self._quiet = False

    def _update(self, comparison_only: bool = False) -> None:
        gate, layer = self.gate, self.layer
        self.figures["comparison"] = gate_comparison_figure(
            gate, self.comparison_gate, names=(f"image {self.index}", f"image {self.comparison}"),
            title=f"{layer}: gates of image {self.index} and image {self.comparison}")
        if not comparison_only:
            self.boosted, self.suppressed = boosted, suppressed = most_changed_channels(
                gate, self.top_k)
            prediction = self.prediction
            caption = f"predicted {prediction.name} ({prediction.probability:.0%})"
            if self.labels[self.index] is not None:
                caption += f"<br>label: {self.classes[self.labels[self.index]]}"
            self.figures["image"] = image_predictions(
                [self.images[self.index]], [caption], title=f"Image {self.index}", cols=1,
                size=256).update_layout(width=340)
            self.figures["gate"] = gate_figure(
                gate, boosted=boosted, suppressed=suppressed,
                title=f"{layer}: input gate for image {self.index}").update_layout(width=640)
            self.figures["kernel"] = effective_kernel_figure(
                self.model.get_submodule(layer), gate, boosted[0], filters=self.filters,
                title=f"{layer}: kernels for image {self.index}")
            self._channels.value = changed_channels_html(gate, boosted, suppressed)
        for key, fig in self.figures.items():
            if not comparison_only or key == "comparison":
                _show(self._outputs[key], fig)
