"""The package as napari and a reviewer see it: manifest, lazy imports, layers, CLI."""

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code, **kwargs):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, **kwargs)


def test_importing_the_package_and_its_light_parts_does_not_import_torch():
    code = (
        "import sys\n"
        "import napari_im2im_uq, napari_im2im_uq.calibration, napari_im2im_uq.data\n"
        "import napari_im2im_uq.models, napari_im2im_uq.cli, napari_im2im_uq._sample_data\n"
        "napari_im2im_uq.cli.build_parser()\n"
        "heavy = [m for m in ('torch', 'napari', 'qtpy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run)")
def test_opening_napari_with_the_plugin_and_its_samples_does_not_import_torch():
    code = (
        "import sys\n"
        "import napari\n"
        "viewer = napari.Viewer(show=False)\n"
        "viewer.open_sample('napari-im2im-uq', 'synthetic_tem')\n"
        "viewer.open_sample('napari-im2im-uq', 'synthetic_qpi')\n"
        "names = [layer.name for layer in viewer.layers]\n"
        "viewer.close()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(names)\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tem truth (high-res)" in proc.stdout


def test_manifest_is_valid_with_imports_and_prefixed():
    proc = subprocess.run(["npe2", "validate", "napari-im2im-uq", "--imports"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import yaml

    manifest = yaml.safe_load((ROOT / "src/napari_im2im_uq/napari.yaml").read_text())
    for command in manifest["contributions"]["commands"]:
        assert command["id"].startswith("napari-im2im-uq.")


def test_top_level_manifest_is_a_link_to_the_packaged_one():
    top = ROOT / "napari.yaml"
    assert top.is_symlink()
    assert top.resolve() == (ROOT / "src/napari_im2im_uq/napari.yaml").resolve()


def test_no_qt_binding_in_install_requires():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requires = cfg["options"]["install_requires"].lower()
    for binding in ("pyqt5", "pyqt6", "pyside2", "pyside6"):
        assert binding not in requires
    extras = cfg["options.extras_require"]
    # napari deprecates PyQt5 (and needs Qt6 for its theme detection): the extras install PyQt6
    for extra in ("testing", "all"):
        assert "pyqt6" in extras[extra].lower() and "pyqt5" not in extras[extra].lower(), extra
    ci = (ROOT / ".ci" / "run").read_text()
    assert "export QT_API=pyqt6" in ci  # CI runs the tests on the binding the extras install


def test_import_contracts_hold():
    proc = subprocess.run(["lint-imports"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "broken" in proc.stdout and "0 broken" in proc.stdout


def test_demo_command_calibrates_every_method(tmp_path, capsys):
    from napari_im2im_uq.cli import main

    out = tmp_path / "records.json"
    assert main(["demo", "--report", "--images", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for title in ("intervals, RCPS", "intervals, CRC", "trust mask", "continuous mask",
                  "membrane sets"):
        assert title in text
    assert text.count("lam_hat = ") == 5
    import json

    from napari_im2im_uq.calibration import CalibrationResult

    records = json.loads(out.read_text())
    for rec in records.values():
        res = CalibrationResult.from_dict(rec["result"])
        assert res.valid and 0 <= rec["held_out_risk"] <= 1
    # each figure says the kind of its guarantee, and is tested the way that kind is stated
    assert text.count("kind of guarantee: high probability") == 1  # RCPS
    assert text.count("kind of guarantee: expectation") == 4
    rcps = records["intervals, RCPS (Hoeffding-Bentkus)"]
    assert rcps["guarantee_kind"] == "high probability"
    assert rcps["splits"]["allowed"] == 0.1 and "of splits above" in rcps["splits"]["message"]
    crc = records["intervals, CRC"]
    assert crc["guarantee_kind"] == "expectation" and "mean held-out risk" in crc["splits"]["message"]
    assert all(rec["splits"]["holds"] for rec in records.values()), records


def _guarantee(rule, alpha=0.1, delta=None, beta=None):
    from types import SimpleNamespace

    return SimpleNamespace(rule=rule, alpha=alpha, delta=delta, beta=beta)


def test_report_verdicts_use_the_test_of_each_kind_of_guarantee():
    import numpy as np

    from napari_im2im_uq._demo import guarantee_test

    rng = np.random.default_rng(0)
    # expectation: a mean a little above alpha by noise is consistent; far above is not
    noisy = 0.1 + 0.01 * rng.standard_normal(100)
    _, verdict = guarantee_test(_guarantee("crc"), noisy - noisy.mean() + 0.1005)
    assert verdict["holds"] and "Monte-Carlo" in verdict["message"]
    _, verdict = guarantee_test(_guarantee("crc"), noisy - noisy.mean() + 0.12)
    assert not verdict["holds"]
    # high probability: every split a little above alpha is a 100% violation rate, not noise
    kind, verdict = guarantee_test(_guarantee("rcps", delta=0.1), np.full(100, 0.1001))
    assert kind["kind"] == "high probability" and verdict["value"] == 1.0
    assert not verdict["holds"]
    # ... while 8 of 100 splits above alpha is within delta = 0.1
    risks = np.r_[np.full(8, 0.2), np.full(92, 0.05)]
    _, verdict = guarantee_test(_guarantee("rcps", delta=0.1), risks)
    assert verdict["holds"] and verdict["value"] == pytest.approx(0.08)
    # a conformal rule guarantees the fraction of failing tiles on average: 1 - beta
    kind, verdict = guarantee_test(_guarantee("conformal", alpha=0.02, beta=0.9),
                                   np.full(50, 0.05))
    assert kind["kind"] == "expectation" and verdict["allowed"] == pytest.approx(0.1)


def _no_display_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(QT_QPA_PLATFORM="xcb", **extra)
    return env


@pytest.mark.parametrize("argv", [["demo"], ["demo", "--headless"]])
def test_demo_without_display_says_the_two_ways_out(argv, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "napari_im2im_uq.cli", *argv],
                          capture_output=True, text=True, env=_no_display_env(), cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])  # not -6 (abort)
    (line,) = proc.stderr.strip().splitlines()
    assert "no display" in line and "xvfb-run -a napari-im2im-uq demo" in line
    assert "napari-im2im-uq demo --report" in line
    assert not list(tmp_path.iterdir())  # no screenshot, no record, no core file


def test_demo_with_a_display_qt_cannot_reach_says_so(tmp_path):
    """DISPLAY names no X server: Qt would abort the process; the demo explains instead."""
    proc = subprocess.run([sys.executable, "-m", "napari_im2im_uq.cli", "demo", "--headless"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env=_no_display_env(DISPLAY=":4242"))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    (line,) = proc.stderr.strip().splitlines()
    assert "Qt cannot connect to a display" in line and "--report" in line
    assert not list(tmp_path.iterdir())


def test_cli_without_command_prints_help_and_fails(capsys):
    from napari_im2im_uq.cli import main

    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_napari_reviewer_checks():
    """npe2 validate --imports; ids prefixed; no Qt binding required; only public napari."""
    import ast
    import configparser
    import shutil
    import subprocess

    import yaml

    npe2 = shutil.which("npe2")
    assert npe2, "npe2 is a declared dependency"
    proc = subprocess.run([npe2, "validate", "napari-im2im-uq", "--imports"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "valid" in proc.stdout, proc.stdout + proc.stderr
    root = Path(__file__).resolve().parents[1]
    manifest = yaml.safe_load((root / "src/napari_im2im_uq/napari.yaml").read_text())
    ids = [c["id"] for c in manifest["contributions"]["commands"]]
    assert ids and all(i.startswith("napari-im2im-uq.") for i in ids)
    assert {w["display_name"] for w in manifest["contributions"]["widgets"]} == {
        "Model", "Predict", "Calibrate", "Diagnostics", "Train"}
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    requires = cfg["options"]["install_requires"].lower()
    for binding in ("pyqt5", "pyqt6", "pyside2", "pyside6", "napari[all]", "napari[pyqt"):
        assert binding not in requires, binding
    for path in (root / "src/napari_im2im_uq").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] == "napari":
                    assert not any(part.startswith("_") for part in name.split(".")), (
                        f"{path.name} imports the private napari module {name}")
