"""The README runs as written: its code blocks are extracted and executed verbatim.

Python blocks run as they are (the console recipe in a real napari viewer, where the napari
console defines ``viewer``); bash blocks run in a shell, except the installs, which are checked
to be exactly what ``.ci/run`` installs (CI runs them on a fresh machine).
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _display import needs_display

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    """Return the fenced code blocks of the README in ``lang``, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """Return the shell commands of a bash block: comments dropped, ``&&`` chains split."""
    out = []
    for line in block.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            out += [c.strip() for c in line.split("&&")]
    return out


def normalized_install(command: str) -> str:
    """``python -m pip install -q X  # why`` and ``pip install X`` are the same install."""
    words = command.split(" #", 1)[0].split()
    if words[:3] == ["python", "-m", "pip"]:
        words = words[2:]
    return " ".join(w for w in words if w != "-q")


def extras_of(command: str) -> set | None:
    """The extras of ``pip install -e ".[a,b]"``, or None for another command."""
    match = re.fullmatch(r'pip install -e "\.\[([\w,-]+)\]"', command)
    return set(match.group(1).split(",")) if match else None


def no_display_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["QT_QPA_PLATFORM"] = "xcb"
    return env


def bin_dir() -> str:
    return str(Path(sys.executable).parent)


def test_the_readme_has_its_blocks():
    assert len(blocks("python")) >= 2
    assert len(blocks("bash")) >= 3
    install, tests = blocks("bash")[0], blocks("bash")[-1]
    # the first command installs and runs the main job, the second installs the test tools
    # and runs the tests, each one line
    assert len(install.strip().splitlines()) == 1 and "napari-im2im-uq demo" in install
    assert len(tests.strip().splitlines()) == 1 and "python -m pytest" in tests


def test_install_and_test_commands_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    ci_installs = {normalized_install(line.strip()) for line in ci.splitlines()
                   if line.strip().startswith("python -m pip install")}
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    extras = {k: {r.strip().lower() for r in v.strip().splitlines()}
              for k, v in cfg["options.extras_require"].items()}
    seen = set()
    for block in blocks("bash"):
        for command in commands(block):
            if not command.startswith("pip install"):
                continue
            seen.add(command)
            if command == 'pip install -e ".[all]"':
                # CI installs the test extra, which holds everything the all extra installs
                assert extras["all"] <= extras["testing"], (extras["all"], extras["testing"])
                assert any("pyqt6" in r for r in extras["all"])
            elif extras_of(command) is not None:  # CI may add extras for optional tests
                assert any(extras_of(command) <= (extras_of(ci) or set()) for ci in ci_installs), (
                    command, ci_installs)
            else:
                assert command in ci_installs, (command, ci_installs)
    assert {'pip install torch==2.13.0', 'pip install -e ".[all]"',
            'pip install -e ".[testing]"'} <= seen
    # the README's test command is the one CI runs (there under Xvfb, on PyQt6)
    assert "python -m pytest" in commands(blocks("bash")[-1])
    assert re.search(r"^xvfb-run .*python -m pytest$", ci, flags=re.M)
    assert "export QT_API=pyqt6" in ci


def test_the_demo_command_as_written_explains_a_machine_without_display(tmp_path):
    """The first command's demo, verbatim, on a machine without a display: one line, exit 2."""
    (demo,) = [c for c in commands(blocks("bash")[0]) if c.startswith("napari-im2im-uq")]
    env = no_display_env()
    env["PATH"] = bin_dir() + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(demo, shell=True, capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "xvfb-run -a napari-im2im-uq demo" in lines[0] and "--report" in lines[0]
    assert "core dumped" not in proc.stderr.lower() and "Aborted" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written, no core file


def test_the_models_block_runs_as_written(tmp_path):
    """``python -c ... list_models``, ``predict volume.tif``, ``train --list``, verbatim."""
    import tifffile

    block = next(b for b in blocks("bash") if "napari-im2im-uq predict" in b)
    tifffile.imwrite(tmp_path / "volume.tif",
                     np.random.default_rng(0).random((48, 48), dtype=np.float32))
    env = dict(os.environ)
    env["PATH"] = bin_dir() + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tem-sr4x-quantile" in proc.stdout
    assert (tmp_path / "out.zarr" / "zarr.json").is_file()


def test_the_array_recipe_runs_as_written(capsys):
    (code,) = [b for b in blocks("python") if "calibrate_intervals" in b]
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    assert "probability" in capsys.readouterr().out
    lo, hi = namespace["lo"], namespace["hi"]
    assert lo.shape == hi.shape == namespace["t"]["truth"][128:].shape and (hi >= lo).all()


@needs_display
def test_the_console_recipe_runs_as_written(make_napari_viewer, tmp_path, monkeypatch, capsys):
    """The napari-console recipe, verbatim, with ``viewer`` defined as the console defines it."""
    import warnings

    from napari_im2im_uq import Im2ImUQWarning

    (code,) = [b for b in blocks("python") if "viewer" in b]
    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer(show=True)
    namespace = {"viewer": viewer}
    with warnings.catch_warnings():
        warnings.simplefilter("error", Im2ImUQWarning)  # honest: no warning about its own use
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "held-out risk" in out and "target" in out
    report = namespace["report"]
    assert report["calibration_tiles_left_out"] == 40 and report["tiles_used_to_calibrate"] == 0
    assert (tmp_path / "intervals.json").is_file()
    assert "interval width (tem-sr4x-quantile)" in viewer.layers


def test_help_texts_are_plain(capsys):
    from napari_im2im_uq.cli import main

    for argv in (["--help"], ["demo", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        assert "``" not in text and ":func:" not in text and ":class:" not in text, text
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    entry = re.search(r"^ {4}demo\s(.*?)(?=^ {4}\S|\Z)", top, flags=re.S | re.M)
    demo_line = " ".join(entry.group(1).split())
    assert "napari" in demo_line and "--report" in demo_line, demo_line
