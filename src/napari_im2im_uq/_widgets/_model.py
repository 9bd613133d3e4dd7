"""The Model dock widget: pick a zoo model, a bundle or a bioimage.io package, read its card.

A model on disk is a folder (a bundle, or a bioimage.io package folder) or a package's .zip:
two entries of the model list, each with its own picker, since one file dialog picks either
folders or files. A package whose weights are ``pytorch_state_dict`` runs its author's Python
when loaded: a checkbox, shown for such a package only and withdrawn when another model is
chosen, gives the session's ``trust_code``.
"""

from __future__ import annotations

import contextlib
import html
from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, FileEdit

from .. import api
from ._common import Panel, session, text

ON_DISK = "(folder on disk: bundle or bioimage.io package)"
ZIP = "(bioimage.io package .zip)"
TRUST = "trust this package's code (pytorch_state_dict runs the author's Python)"
#: A folder holding one of these is a model: a bundle, or a bioimage.io package.
_MODEL_FILES = ("model.json", "rdf.yaml", "bioimageio.yaml")
DEVICES = ("auto", "cpu", "cuda", "mps")


class ModelWidget(Panel):
    """Choose the model every other widget of this viewer uses; shows its card.

    Reading the card opens ``model.json`` only: torch is imported in the background after the
    first dock opens (``_common.warm_up``), or when a prediction first runs.
    """

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        super().__init__(viewer, labels=True)
        self.session = session(viewer)
        zoo = api.list_models()
        chosen, folder, package = _initial(self.session.model, zoo)
        self.model = ComboBox(label="model", choices=[*zoo, ON_DISK, ZIP], value=chosen,
                              tooltip="a model shipped with the plugin, a folder on disk (a "
                                      "bundle or a bioimage.io package), or a package's .zip")
        self.folder = FileEdit(label="bundle folder", mode="d", value=folder, visible=False,
                               tooltip="a folder with model.json and weights.safetensors, or a "
                                       "bioimage.io package folder (rdf.yaml)")
        self.zip = FileEdit(label="package .zip", mode="r", filter="*.zip", value=package,
                            visible=False, tooltip="a bioimage.io model package as one .zip file "
                                                   "(as downloaded from bioimage.io)")
        self.trust = CheckBox(
            text=TRUST, value=self.session.trust_code, visible=False,
            tooltip="This package's weights are a PyTorch state dict: its network is built by a "
                    "Python file from the package's author, which runs on this computer when "
                    "the model loads. Tick only if you trust the author. TorchScript and ONNX "
                    "packages run without it. Choosing another model withdraws it.")
        self.trust.text = TRUST  # as written: the constructor turns "_" into spaces
        self._last = self.session.model  # the model the checkbox was last shown for
        self.device = ComboBox(label="device", choices=DEVICES, value=self.session.device,
                               tooltip="auto: CUDA, then Apple MPS, then the CPU")
        self.card = text(rich=True)
        self.extend([self.model, self.folder, self.zip, self.trust, self.device, self.card,
                     self.status])
        self.watch(self.model, self.folder, self.zip, self.device, self.trust)
        self.session.changed.connect(self.follow)
        self.refresh()

    def follow(self, *_):
        """Show the session's model and device when another dock chose them.

        The Train dock makes its new bundle the session's model: this dock then shows that
        folder and its card (fields set with their signals blocked, then one re-validation,
        so the old choice is never written back to the session on the way).
        """
        if (self.choice(), self.device.value) == (self.session.model, self.session.device):
            return
        zoo = [c for c in self.model.choices if c not in (ON_DISK, ZIP)]
        chosen, folder, package = _initial(self.session.model, zoo)
        widgets = (self.model, self.folder, self.zip, self.device, self.trust)
        with contextlib.ExitStack() as stack:
            for w in widgets:
                stack.enter_context(w.changed.blocked())
            self.model.value = chosen
            if folder:
                self.folder.value = folder
            if package:
                self.zip.value = package
            self.device.value = self.session.device
            self.trust.value = self.session.trust_code
        self._last = self.choice()
        self.refresh()

    def choice(self):
        """Return the chosen zoo name, model folder or package zip."""
        if self.model.value == ON_DISK:
            return str(self.folder.value)
        if self.model.value == ZIP:
            return str(self.zip.value)
        return self.model.value

    def _no_trust(self):
        self.trust.visible = False
        with self.trust.changed.blocked():
            self.trust.value = False

    def problems(self):
        self.folder.visible = self.model.value == ON_DISK
        self.zip.visible = self.model.value == ZIP
        choice = self.choice()
        if choice != self._last:  # trust is given to one package, never carried over
            self._last = choice
            with self.trust.changed.blocked():
                self.trust.value = False
        reason = _missing(self.model.value, self.folder.value, self.zip.value)
        if reason is None:
            try:
                card, io = api.model_card(choice), api.model_io(choice)
            except ValueError as err:
                reason = str(err)
        if reason is not None:
            self.card.value = ""
            self._no_trust()
            return reason
        self.card.value = render_card(card)
        self.trust.visible = io["needs_trust"]
        trusted = bool(self.trust.value) and io["needs_trust"]
        self.session.set(model=choice, device=self.device.value, trust_code=trusted)
        return None


def _initial(model: str, zoo: list) -> tuple[str, str, str]:
    """Return the model list's entry, folder and zip that show the session's ``model``."""
    if model in zoo:
        return model, "", ""
    path = Path(model)
    if path.suffix.lower() == ".zip" and path.is_file():
        return ZIP, "", model
    if path.is_dir():
        return ON_DISK, model, ""
    return zoo[0], "", ""


def _missing(entry: str, folder, package) -> str | None:
    """Return why the chosen folder or zip is not a model, or None."""
    if entry == ON_DISK:
        if not folder or str(folder) in ("", ".") or not any(
                (Path(folder) / f).is_file() for f in _MODEL_FILES):
            return (f"bundle folder must contain model.json (or a bioimage.io package's "
                    f"rdf.yaml or bioimageio.yaml); got {str(folder)!r}")
    elif entry == ZIP:
        path = Path(str(package or ""))
        if str(package or "") in ("", ".") or path.suffix.lower() != ".zip" or not path.is_file():
            return (f"package .zip must be an existing .zip file of a bioimage.io package; got "
                    f"{str(package or '')!r}")
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
