"""The Model dock widget: pick a zoo model or a bundle on disk, read its card, choose the device."""

from __future__ import annotations

import html

from magicgui.widgets import ComboBox, FileEdit

from .. import api
from ._common import Panel, session, text

ON_DISK = "(bundle folder on disk)"
#: A folder holding one of these is a model: a bundle, or a bioimage.io package.
_MODEL_FILES = ("model.json", "rdf.yaml", "bioimageio.yaml")
DEVICES = ("auto", "cpu", "cuda", "mps")


class ModelWidget(Panel):
    """Choose the model every other widget of this viewer uses; shows its card.

    Reading the card opens ``model.json`` only: torch is imported in the background after the
    Predict dock opens (``_common.warm_up_torch``), or when a prediction first runs.
    """

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        super().__init__(viewer, labels=True)
        self.session = session(viewer)
        zoo = api.list_models()
        self.model = ComboBox(label="model", choices=[*zoo, ON_DISK],
                              value=self.session.model if self.session.model in zoo else zoo[0],
                              tooltip="a model shipped with the plugin, or a bundle folder")
        self.folder = FileEdit(label="bundle folder", mode="d", visible=False,
                               tooltip="a folder with model.json and weights.safetensors, or a "
                                       "bioimage.io package folder (rdf.yaml)")
        self.device = ComboBox(label="device", choices=DEVICES, value=self.session.device,
                               tooltip="auto: CUDA, then Apple MPS, then the CPU")
        self.card = text(rich=True)
        self.extend([self.model, self.folder, self.device, self.card, self.status])
        self.watch(self.model, self.folder, self.device)
        self.refresh()

    def choice(self):
        """Return the chosen zoo name or bundle folder."""
        if self.model.value == ON_DISK:
            return str(self.folder.value)
        return self.model.value

    def problems(self):
        self.folder.visible = self.model.value == ON_DISK
        if self.model.value == ON_DISK:
            folder = self.folder.value
            if not folder or str(folder) in ("", ".") or not any(
                    (folder / f).is_file() for f in _MODEL_FILES):
                self.card.value = ""
                return (f"bundle folder must contain model.json (or a bioimage.io package's "
                        f"rdf.yaml); got {str(folder)!r}")
        try:
            card = api.model_card(self.choice())
        except ValueError as err:
            self.card.value = ""
            return str(err)
        self.card.value = render_card(card)
        self.session.set(model=self.choice(), device=self.device.value)
        return None


def render_card(card: dict) -> str:
    """Return a model card as rich text for the widget."""
    rows = [("task", card["task"]), ("heuristic", card["heuristic"]), ("scale", card["scale"]),
            ("inputs", card["inputs"]), ("training data", card["data"]),
            ("licence", card["licence"]), ("quality", card["quality"]),
            ("weights", card.get("weights", "?"))]
    body = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
                   for k, v in rows)
    return f"<b>{html.escape(card['name'])}</b><table>{body}</table>"
