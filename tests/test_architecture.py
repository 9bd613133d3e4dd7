"""The house rules a machine can check: small files, a thin api, a registry, no import cycle.

(The layer contracts themselves are import-linter's, in pyproject.toml, checked by
``test_package.test_import_contracts_hold``.)
"""

import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_im2im_uq"

#: Ways of switching on a method's name. "mask" and "segmentation" are also names of model
#: heads and outputs (``model.heuristic == "mask"`` is about the network, not a calibration
#: method), so for them only a comparison on a line about a ``method`` counts; "intervals" and
#: "trust_mask" name nothing else, so any comparison with them, or a dict keyed by them, counts.
_UNIQUE = "intervals|trust_mask"
SWITCHES = [
    re.compile(r"""\bmethod\b.*(==|!=)\s*["']"""),
    re.compile(r"""["']\s*(==|!=).*\bmethod\b"""),
    re.compile(r"""\bmethod\b["']?\]?\s*(not\s+)?in\s*[(\[{]"""),
    re.compile(rf"""(==|!=)\s*["']({_UNIQUE})["']|["']({_UNIQUE})["']\s*(==|!=)"""),
    re.compile(rf"""["']({_UNIQUE})["']\s*:"""),
]


def _sources():
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _code_lines(path):
    """Lines of a module without comments and docstring-only lines (best effort)."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.split("#", 1)[0]
        if stripped.strip():
            yield number, stripped


def test_switch_patterns_catch_what_they_should():
    caught = [
        'if method == "intervals":',
        "if result.method in ('conformal',):",
        "elif report['method'] != 'mask':",
        '{"intervals": 3, "trust_mask": 2}[method]',
        'if "trust_mask" == m:',
    ]
    for text in caught:
        assert any(p.search(text) for p in SWITCHES), text
    for text in ('entry = methods.get(result.method)', 'key == "prediction"',
                 'x = "trust_mask"', 'if model.heuristic == "mask":', 'role == "segmentation"'):
        assert not any(p.search(text) for p in SWITCHES), text


def test_no_code_outside_calibration_switches_on_a_method_name():
    offenders = []
    for path in _sources():
        rel = path.relative_to(SRC)
        if rel.parts[0] == "calibration":
            continue
        for number, line in _code_lines(path):
            if any(p.search(line) for p in SWITCHES):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "ask calibration.methods instead:\n" + "\n".join(offenders)


def test_no_module_over_700_lines_and_a_thin_api():
    sizes = {str(p.relative_to(SRC)): len(p.read_text(encoding="utf-8").splitlines())
             for p in _sources()}
    big = {name: n for name, n in sizes.items() if n > 700}
    assert not big, f"modules over 700 lines: {big}"
    assert sizes["api.py"] < 300, sizes["api.py"]


def _cycles(graph, modules):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in modules}

    def visit(root):
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter[0]
                counter[0] += 1
                stack.append(node)
                on_stack.add(node)
            for j in range(i, len(edges[node])):
                nxt = edges[node][j]
                if nxt not in index:
                    work.append((node, j + 1))
                    work.append((nxt, 0))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                if low[node] == index[node]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return out


def test_no_import_cycle_in_the_package():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("napari_im2im_uq")
    modules = {m for m in graph.modules if m.startswith("napari_im2im_uq")}
    # A package's __init__ re-exporting its own modules is not a cycle of design: leave the
    # package nodes out and look at the modules that do the work.
    packages = {m for m in modules if (SRC.parent / (m.replace(".", "/") + "/__init__.py")).exists()}
    cycles = _cycles(graph, modules - packages)
    assert not cycles, f"import cycles: {cycles}"
