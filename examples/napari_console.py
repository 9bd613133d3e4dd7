"""Console recipe: predict, calibrate on chosen ground truth, check, diagnose, save the record.

In the napari console (Plugins > napari-im2im-uq sample data gives these layers), the same
calls take ``viewer.layers[...]`` instead of the arrays below and ``api.show(viewer, layers)``
puts the results on the canvas. Here a stand-in for layers keeps the recipe runnable anywhere.
"""

import tempfile
from pathlib import Path

import numpy as np

from napari_im2im_uq import api
from napari_im2im_uq._sample_data import sample_tem


class Layer:
    """What napari's console hands you: data, name, scale, translate, metadata."""

    def __init__(self, data, kwargs):
        self.data, self.name = data, kwargs["name"]
        self.metadata = kwargs.get("metadata", {})
        self.scale = kwargs.get("scale", (1.0,) * np.ndim(data))
        self.translate = kwargs.get("translate", (0.0,) * np.ndim(data))


layers = {kw["name"]: Layer(d, kw) for d, kw, _ in sample_tem()}
truth = layers["tem truth (high-res)"]

# 1. predict with a shipped model (outputs overlay the truth: scale = input scale / 4)
outs = [Layer(d, kw) for d, kw, _ in api.predict("tem-sr4x-quantile",
                                                  layers["tem input (low-res)"], device="cpu")]
outputs = api.model_outputs(outs, "prediction (tem-sr4x-quantile)")
print("outputs:", {k: v.data.shape for k, v in outputs.items()})

# 2. where to acquire ground truth: a random plan of 12 tiles on the first plane's grid
plan, _, _ = api.plan_tiles(truth, tile_shape=(64, 64), n_tiles=12, seed=0)

# 3. calibrate intervals on those tiles only, then a self-check on all labeled tiles
cal = api.calibrate(outputs, truth, method="intervals", alpha=0.1, rule="crc",
                    tile_shape=(64, 64), regions=plan)
print(cal.result.guarantee)
assert cal.result.n == 12
check = api.self_check(outputs, truth, method="intervals", alpha=0.1, rule="crc",
                       tile_shape=(64, 64))
print(check["message"])

# 4. diagnostics on held-out truth: the tiles of the plan are left out by default,
#    then the record for a reviewer
report = api.diagnose(cal.record, outputs, truth, n_splits=20)
assert report["calibration_tiles_left_out"] == 12 and report["tiles_used_to_calibrate"] == 0
for label, text in report["summary"]:
    print(f"{label}: {text}")
with tempfile.TemporaryDirectory() as tmp:
    path = api.save_record(cal, Path(tmp) / "intervals.json")
    assert api.load_record(path)["calibration"]["lam"] == cal.result.lam
