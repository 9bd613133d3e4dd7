"""The plugin's dock widgets (magicgui containers); they call :mod:`napari_im2im_uq.api` only."""

from ._calibrate import CalibrateWidget
from ._diagnostics import DiagnosticsWidget
from ._model import ModelWidget
from ._predict import PredictWidget
from ._train import TrainWidget

__all__ = ["CalibrateWidget", "DiagnosticsWidget", "ModelWidget", "PredictWidget", "TrainWidget"]
