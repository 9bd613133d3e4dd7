"""Races on a store, with real processes: one writer at a time, stale locks, early kills.

Each case runs a writer in a child process (``python -c``) and checks, from this process, the
clear error, that the store stays readable, and that a resumed store equals a clean run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
zarr = pytest.importorskip("zarr")

from napari_im2im_uq import Im2ImUQWarning  # noqa: E402
from napari_im2im_uq._jobs import run_to_end  # noqa: E402
from napari_im2im_uq.inference import predict_to_zarr, write_zarr  # noqa: E402

CHILD = r"""
import os, sys, time
import numpy as np, torch, zarr
from napari_im2im_uq.models import Im2ImModel, build_network
from napari_im2im_uq.inference import _zarr, predict_to_zarr

class Slow(Im2ImModel):
    def predict_tensor(self, x, **kw):
        time.sleep(float(os.environ.get("SLOW", "0")))
        hold = os.environ.get("HOLD")  # wait while this file exists (the test checks meanwhile)
        while hold and os.path.exists(hold):
            time.sleep(0.01)
        return super().predict_tensor(x, **kw)

store, kill_at = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = Slow(build_network("quantile", depth=1, base_channels=2), {"heuristic": "quantile"})
image = np.random.default_rng(0).random((3, 24, 24), dtype=np.float32)
if kill_at >= 0:  # die (as a kill would) at the kill_at-th step of creating the store
    steps = [0]
    def dying(real):
        def step(*a, **k):
            if steps[0] == kill_at:
                os._exit(9)
            steps[0] += 1
            return real(*a, **k)
        return step
    _zarr.write_root = dying(_zarr.write_root)
    zarr.Group.create_array = dying(zarr.Group.create_array)
    zarr.Group.create_group = dying(zarr.Group.create_group)
try:
    gen = predict_to_zarr(model, image, store, axes="ZYX", tile_shape=(8, 8), device="cpu",
                          overwrite=os.environ.get("OVERWRITE") == "1")
except (FileExistsError, ValueError) as err:
    print("refused:", err, flush=True)
    sys.exit(3)
print("pid", os.getpid(), flush=True)
for done, total in gen:
    print("done", done, total, flush=True)
"""

KW = dict(axes="ZYX", tile_shape=(8, 8), device="cpu")
IMAGE = np.random.default_rng(0).random((3, 24, 24), dtype=np.float32)


def _model():
    from napari_im2im_uq.models import Im2ImModel, build_network

    torch.manual_seed(0)
    return Im2ImModel(build_network("quantile", depth=1, base_channels=2), {"heuristic": "quantile"})


def _child(store, *, kill_at=-1, slow=0.0, overwrite=False, hold=None):
    env = {**os.environ, "SLOW": str(slow), "OVERWRITE": "1" if overwrite else "0",
           "HOLD": str(hold or "")}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(store), str(kill_at)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(proc, word, timeout=120):
    """Read the child's lines until one starts with ``word``; return it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(word):
            return line
    raise AssertionError(f"child never said {word!r}: {proc.stderr.read() if proc.poll() else ''}")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    store = tmp_path_factory.mktemp("clean") / "clean.zarr"
    arrays = write_zarr(_model(), IMAGE, store, **KW)
    return {k: np.asarray(v[...]) for k, v in arrays.items()}


def _equal_to_clean(store, clean):
    root = zarr.open_group(str(store), mode="r")
    assert root.attrs["napari_im2im_uq"]["complete"] is True
    for name, ref in clean.items():
        np.testing.assert_array_equal(np.asarray(root[f"{name}/0"][...]), ref)


# (case, second writer: in another process or this one, overwrite)
SECOND_WRITERS = [
    ("another process", "process", False),
    ("another process, overwrite", "process", True),
    ("this process", "here", False),
    ("this process, overwrite", "here", True),
]


@pytest.mark.parametrize(("case", "where", "overwrite"), SECOND_WRITERS,
                         ids=[c[0] for c in SECOND_WRITERS])
def test_a_second_writer_is_refused(tmp_path, clean, case, where, overwrite):
    store = tmp_path / "o.zarr"
    hold = tmp_path / "hold"  # the first writer waits inside its first block until released,
    hold.touch()  # so a second one started late on a loaded machine still meets a writer
    first = _child(store, slow=0.15, hold=hold)
    try:
        line = _wait_for(first, "pid")
        pid = int(line.split()[1])
        if where == "process":
            second = _child(store, overwrite=overwrite)
            out, _ = second.communicate(timeout=120)
            assert second.returncode == 3
            assert f"being written by another run: pid {pid}" in out
        else:
            with pytest.raises(FileExistsError, match=f"being written by another run: pid {pid}"):
                predict_to_zarr(_model(), IMAGE, store, overwrite=overwrite, **KW)
        # the store stays readable while the first writes
        assert zarr.open_group(str(store), mode="r")["prediction/0"].shape == (3, 24, 24)
        hold.unlink()
        first.communicate(timeout=300)
        assert first.returncode == 0
    finally:
        if first.poll() is None:
            first.kill()
    _equal_to_clean(store, clean)
    assert not (store / "_lock").exists()


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0], ids=["at once", "0.3 s", "1 s"])
def test_a_killed_writers_lock_is_taken_over(tmp_path, clean, delay):
    """SIGKILL after the writer took its lock (the store's first moments, then later)."""
    store = tmp_path / "o.zarr"
    first = _child(store, slow=0.1)
    end = time.monotonic() + 120
    while not (store / "_lock").exists() and time.monotonic() < end:
        time.sleep(0.005)
    time.sleep(delay)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    with pytest.warns(Im2ImUQWarning, match=f"stale lock of pid {first.pid}"):
        run_to_end(predict_to_zarr(_model(), IMAGE, store, **KW))
    _equal_to_clean(store, clean)
    assert not (store / "_lock").exists()


# steps: 0 the root's metadata, then each output's group and array in turn
@pytest.mark.parametrize("kill_at", range(7), ids=lambda k: f"creation step {k}")
def test_a_store_killed_while_created_resumes(tmp_path, clean, kill_at):
    store = tmp_path / "o.zarr"
    child = _child(store, kill_at=kill_at)
    child.communicate(timeout=300)
    assert child.returncode == 9
    with pytest.warns(Im2ImUQWarning, match="stale lock"):
        run_to_end(predict_to_zarr(_model(), IMAGE, store, **KW))
    _equal_to_clean(store, clean)


def test_a_lock_of_another_host_is_never_taken(tmp_path):
    import json

    store = tmp_path / "o.zarr"
    write_zarr(_model(), IMAGE, store, **KW)
    (store / "_lock").mkdir()
    info = {"pid": 1, "host": "elsewhere", "started": "then", "token": "t"}
    (store / "_lock" / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": {"napari_im2im_uq_lock": info}}))
    with pytest.raises(FileExistsError, match="pid 1 on host 'elsewhere'"):
        predict_to_zarr(_model(), IMAGE, store, **KW)
    assert (store / "_lock" / "zarr.json").is_file()
