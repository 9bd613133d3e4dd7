"""The warm-up and the switch interval of ``_widgets._warm`` (no display needed)."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading

import pytest

pytest.importorskip("qtpy")
from napari_im2im_uq._widgets import _warm  # noqa: E402


def test_fast_switching_nests_and_restores():
    before = sys.getswitchinterval()
    with _warm.fast_switching():
        inner = sys.getswitchinterval()
        with _warm.fast_switching():
            assert sys.getswitchinterval() == inner
        assert sys.getswitchinterval() == inner  # the outer span still holds it
    assert inner == min(_warm.SWITCH_INTERVAL_S, before)
    assert sys.getswitchinterval() == before
    _warm.release()  # a release without a hold changes nothing
    assert sys.getswitchinterval() == before


def test_fast_switching_across_threads_restores_once_the_last_ends():
    before = sys.getswitchinterval()
    started, finish = threading.Event(), threading.Event()

    def job():
        with _warm.fast_switching():
            started.set()
            finish.wait(10)

    t = threading.Thread(target=job)
    t.start()
    started.wait(10)
    _warm.hold()
    finish.set()
    t.join(10)
    assert sys.getswitchinterval() == min(_warm.SWITCH_INTERVAL_S, before)  # still held here
    _warm.release()
    assert sys.getswitchinterval() == before


def test_switch_interval_none_leaves_python_alone(monkeypatch):
    monkeypatch.setattr(_warm, "SWITCH_INTERVAL_S", None)
    before = sys.getswitchinterval()
    with _warm.fast_switching():
        assert sys.getswitchinterval() == before
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("enabled", [True, False])
def test_warm_up_now_imports_reports_failures_and_keeps_the_collector_state(enabled):
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        failed = _warm.warm_up_now(("json", "no_such_module_for_im2im_uq"))
        assert failed == ["no_such_module_for_im2im_uq"]
        assert "json" in sys.modules
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_preload_libraries_of_a_missing_or_imported_package_loads_nothing():
    assert _warm.preload_libraries("no_such_package_for_im2im_uq") == []
    assert _warm.preload_libraries("json") == []  # imported already


def test_preloaded_torch_imports_and_computes():
    """torch's libraries loaded by dlopen first, then ``import torch`` works as usual."""
    pytest.importorskip("torch")
    code = (
        "import sys\n"
        "from napari_im2im_uq._widgets import _warm\n"
        "assert 'torch' not in sys.modules\n"
        "loaded = _warm.preload_libraries('torch')\n"
        "assert any('torch_cpu' in p for p in loaded), loaded\n"
        "assert 'torch' not in sys.modules\n"
        "import torch\n"
        "x = torch.nn.functional.conv2d(torch.ones(1, 1, 5, 5), torch.ones(1, 1, 3, 3))\n"
        "assert float(x.sum()) == 81.0, float(x.sum())\n"
        "assert _warm.preload_libraries('torch') == []\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
