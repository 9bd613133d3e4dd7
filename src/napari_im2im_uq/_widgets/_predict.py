"""The Predict dock widget: run the chosen model over an image layer, lazily when large."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import ComboBox, FileEdit, Label, PushButton, SpinBox

from .. import api
from ._common import NONE, JobRunner, Panel, kind, layer_picker, meta, prefer, session, text

OUTPUTS = {"auto (in memory up to 1 GiB, else lazy)": "auto", "in memory": "memory",
           "lazy (computed as shown)": "lazy", "zarr store": "zarr"}

#: The uncertainty a point-prediction model offers (the ensemble needs other models: the API).
UNCERTAINTY = {"test-time augmentation (8 rotations and flips)": "tta",
               "MC dropout (networks with dropout)": "mc_dropout",
               "constant width (baseline)": "constant", "none (the prediction only)": None}


def _is_image(layer) -> bool:
    return kind(layer) == "image"


class PredictWidget(Panel):
    """Predict every output of the session's model; outputs overlay the input and the truth."""

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        super().__init__(viewer, labels=True)
        self.session = session(viewer)
        self._spec_of = self._spec_cache = None
        self.model_label = Label(label="model")
        self.image = layer_picker(viewer, "image", _is_image,
                                  tooltip="raw input; for QPI the top image, or both as channels")
        self.second = layer_picker(viewer, "second image", _is_image, optional=NONE,
                                   tooltip="two-image models (QPI): the bottom image")
        self.prediction = layer_picker(
            viewer, "prediction", lambda ly: meta(ly).get("output") == "prediction",
            optional=NONE, tooltip="mask models: the prediction whose mask to compute")
        self.uncertainty = ComboBox(
            label="uncertainty", choices=list(UNCERTAINTY), value=next(iter(UNCERTAINTY)),
            visible=False, tooltip="a point-prediction model: where its prediction varies "
            "(lower/upper, std) for the Calibrate widget to calibrate")
        self.tile_rows = SpinBox(label="tile rows", value=0, min=0, max=8192, step=8,
                                 tooltip="input pixels per tile; 0 = the model's default")
        self.tile_cols = SpinBox(label="tile columns", value=0, min=0, max=8192, step=8,
                                 tooltip="input pixels per tile; 0 = the model's default")
        self.batch = SpinBox(label="batch", value=0, min=0, max=256,
                             tooltip="tiles per forward pass; 0 = 1 on a CPU, 4 on a GPU")
        self.defaults = text()
        self.output = ComboBox(label="output", choices=list(OUTPUTS), value=next(iter(OUTPUTS)))
        self.store = FileEdit(label="zarr store", mode="w", filter="*.zarr", visible=False)
        self.run_button = PushButton(text="Predict")
        self.cancel = PushButton(text="Cancel")
        self.message = text()
        self.extend([self.model_label, self.image, self.second, self.prediction,
                     self.uncertainty, self.tile_rows,
                     self.tile_cols, self.batch, self.defaults, self.output, self.store, self.run_button,
                     self.cancel, self.status, self.message])
        prefer(self.image, lambda ly: meta(ly).get("role") == "input")
        self.runner = JobRunner(self.message, [self.run_button], self.cancel)
        self.runner.after_finish = self.refresh
        self.run_button.changed.connect(self.start)
        self.watch(self.image, self.second, self.prediction, self.output, self.store,
                   self.tile_rows, self.tile_cols)
        self.session.changed.connect(self.refresh)
        self.connect_layers()
        self.refresh()

    def run_buttons(self):
        return [self.run_button]

    def _io(self):
        """Return what the session model takes, read from disk only when the model changes."""
        if self._spec_of != self.session.model:
            self._spec_cache, self._spec_of = api.model_io(self.session.model), self.session.model
        return self._spec_cache

    def problems(self):
        io = self._io()
        trusted = io.get("needs_trust") and self.session.trust_code
        self.model_label.value = (f"{io['name']} on {self.session.device}"
                                  + (" (its code trusted)" if trusted else ""))
        cpu, gpu = io["tile_side"]["cpu"], io["tile_side"]["cuda"]
        self.defaults.value = (
            f"0 = the model's defaults: tiles of up to {cpu} x {cpu} input pixels (spread evenly "
            f"over the image) and batch 1 on a CPU, up to {gpu} x {gpu} and batch 4 on a GPU"
            if cpu else "0 = the model's defaults")
        channels = io["given_channels"]
        is_mask = io["needs_prediction"]
        self.second.visible = len(channels) > 1
        self.prediction.visible = is_mask
        self.uncertainty.visible = bool(io.get("point_only"))
        self.store.visible = self.output.value == "zarr store"
        if io.get("needs_trust") and not self.session.trust_code:
            return (f"{io['name']} holds pytorch_state_dict weights: its network is Python code "
                    "from the package's author, which runs only if you tick \"trust this "
                    "package's code\" in the Model widget")
        image = self.image.value
        if image is None:
            return "choose an input image layer"
        if len(channels) > 1:
            two = image.data.ndim >= 3 and len(channels) in image.data.shape[:2]
            if self.second.value is None and not two:
                return (f"the model takes {len(channels)} images ({', '.join(channels)}): choose "
                        f"a second image, or an image with a channel axis of {len(channels)}")
            if self.second.value is not None and self.second.value.data.shape != image.data.shape:
                return (f"second image must have the shape of the image {image.data.shape}; got "
                        f"{self.second.value.data.shape}")
        elif image.data.ndim not in (2, 3) or getattr(image, "rgb", False):
            return f"image must be 2-D or 3-D grey levels; got shape {image.data.shape}"
        if is_mask and self.prediction.value is None:
            return "a mask model needs the prediction layer its mask is for"
        if (self.tile_rows.value == 0) != (self.tile_cols.value == 0):
            return "tile rows and columns must both be 0 (model default) or both be set"
        if self.output.value == "zarr store":
            path = Path(str(self.store.value))
            if str(self.store.value) in ("", ".") or path.suffix != ".zarr":
                return f"zarr store must be a path ending in .zarr; got {str(self.store.value)!r}"
            if path.exists() and not (path / "zarr.json").is_file():
                return f"{path} exists and is not a zarr store: it would not be replaced"
        return None

    def job(self):
        """Return the api generator for the current fields."""
        tile = None
        if self.tile_rows.value and self.tile_cols.value:
            tile = (self.tile_rows.value, self.tile_cols.value)
        output = OUTPUTS[self.output.value]
        return api.predict_job(
            self.session.model, self.image.value,
            second_image=self.second.value if self.second.visible else None,
            prediction=self.prediction.value if self.prediction.visible else None,
            tile_shape=tile, batch_size=self.batch.value or None, device=self.session.device,
            uncertainty=UNCERTAINTY[self.uncertainty.value] if self._io()["point_only"] else None,
            output=output, store=str(self.store.value) if output == "zarr" else None,
            trust_code=self.session.trust_code,
        )

    def start(self, *_):
        """Run the prediction in a worker thread."""
        if self.problems() is not None:
            return None
        return self.runner.run(self.job, self._done, "predicting")

    def _done(self, layers):
        self.runner.show(self.viewer, layers, self._shown)

    def _shown(self, shown):
        self.message.value = (f"added {len(shown)} layers: " + ", ".join(ly.name for ly in shown)
                              + " (scale " + ", ".join(f"{v:g}" for v in shown[0].scale) + ")")
