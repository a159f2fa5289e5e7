"""One home per concept (issue #20), checked on the source text.

* Outside ``ptytasks/modalities/`` and the engine registry, no code (product, benchmarks,
  scripts) compares a modality or an engine name: it asks the registries
  (``modality_of(data).has_pupil``, ``registry.get(name).resumable``) instead, so a new
  modality or engine touches no other module.
* No module over 500 lines.
* One forward-model entry (``ptytasks.modalities.model_for``).
* The settings every simulator shares (object, dose, injected errors, margin, seed) are
  declared once (``ptytasks.simulate._common.Acquisition``), not in each simulator.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from ptytasks.engines.registry import ENGINES
from ptytasks.modalities import names

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("ptytasks", "storage", "flows", "deployments")
CODE = (*PRODUCT, "bench", "scripts")  # all but the tests
REGISTRIES = ("ptytasks/modalities/", "ptytasks/engines/registry.py")
NAMES = set(names()) | set(ENGINES)
# Comparisons whose left side is an option value that merely shares a name with an engine:
# the PIE update rule ``variant`` ("epie"/"rpie") is an option of the PIE engines.
OPTION_VALUES = {"variant"}


def _tracked(*tops: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "--", *tops], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()  # fmt: skip
    return [ROOT / p for p in out if p.endswith(".py")]


def _literals(node: ast.AST) -> set[str]:
    """String constants in ``node`` (a constant, or a tuple/list/set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return set().union(*(_literals(e) for e in node.elts)) if node.elts else set()
    return set()


def _subject(node: ast.AST) -> str:
    """The last name of a compared expression (``params.variant`` -> ``variant``)."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""


def name_comparisons(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every ``==``/``!=``/``in``/``not in`` comparison between an
    expression and a modality or engine name (``for`` loops over names are not
    comparisons)."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, sides[:-1], sides[1:], strict=True):
            if not isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn):
                continue
            for lit_side, other in ((right, left), (left, right)):
                if _literals(lit_side) & NAMES and _subject(other) not in OPTION_VALUES:
                    hits.append((node.lineno, ast.unparse(node)))
                    break
    return hits


def test_no_code_outside_the_registries_compares_a_modality_or_engine_name():
    found = []
    for path in _tracked(*CODE):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(REGISTRIES):
            continue
        found += [f"{rel}:{line}: {text}" for line, text in name_comparisons(path.read_text())]
    assert not found, "ask ptytasks.modalities / the engine registry instead:\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(
    "source, n",
    [
        ('if data.modality == "fourier": pass', 1),
        ('x = 1 if engine.engine != "rnf" else 2', 1),
        ('if kind in ("epie", "rpie"): pass', 1),
        ('if "coded" == m: pass', 1),
        ('for name in ("epie", "rpie"): pass', 0),
        ('rpie = opts.variant == "rpie"', 0),
        ('if loss == "huber": pass', 0),
    ],
)
def test_the_name_check_sees_branches_and_only_branches(source, n):
    assert len(name_comparisons(source)) == n


def test_no_module_over_500_lines():
    long = []
    for path in _tracked(*PRODUCT, "bench", "tests"):
        n = len(path.read_text().splitlines())
        if n > 500:
            long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not long, "split by what they hold:\n" + "\n".join(long)


def test_one_forward_model_entry():
    """Engines, simulators, calibration and benchmarks build models through
    ``ptytasks.modalities.model_for``; the old per-engine entry points are gone (and no
    module but ``ptytasks/modalities/models.py`` defines a ``model_for``)."""
    gone = ("model_from_data", "import forward_model", "models.factory", "def model_for")
    found = []
    for path in _tracked(*PRODUCT, "bench", "tests"):
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("tests/test_architecture.py", "ptytasks/modalities/models.py"):
            continue
        found += [f"{rel}: {g}" for g in gone if g in text]
    assert not found, "\n".join(found)


def shared_keyword_declarations(source: str) -> list[str]:
    """``function(keyword)`` for every simulator (a function returning ``PtychoData``) in
    ``source`` that declares one of the shared settings as its own parameter."""
    from ptytasks.simulate._common import SHARED

    found = []
    for node in ast.walk(ast.parse(source)):
        returns = getattr(node, "returns", None)
        if isinstance(node, ast.FunctionDef) and returns and "PtychoData" in ast.unparse(returns):
            a = node.args
            own = {x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)}
            found += [f"{node.name}({k})" for k in sorted(own & set(SHARED))]
    return found


def test_simulators_declare_no_shared_setting_themselves():
    """Every simulator takes the shared settings through ``@C.simulator`` (one docstring,
    one default per simulator, one meta record), and still lists them in its signature."""
    import importlib
    import inspect

    from ptytasks.modalities import get

    found = []
    for path in sorted((ROOT / "ptytasks" / "simulate").glob("*.py")):
        if path.name in ("_common.py", "scans.py", "objects.py"):  # the helpers they share
            continue
        found += [f"{path.name}: {d}" for d in shared_keyword_declarations(path.read_text())]
    assert not found, "take these from Acquisition (@C.simulator):\n" + "\n".join(found)
    for m in names():
        assert {"dose", "seed", "object_kind"} <= get(m).simulate_keywords(), m
        module, func = get(m).simulator.split(":")
        fn = getattr(importlib.import_module(module), func)
        assert "acq" not in inspect.signature(fn).parameters, m


def test_the_shared_keyword_check_sees_declarations():
    sim = "def f(*, dose=None, frame_size=64) -> PtychoData: pass"
    assert shared_keyword_declarations(sim) == ["f(dose)"]
    assert shared_keyword_declarations("def f(*, frame_size=64, acq) -> PtychoData: pass") == []
    assert shared_keyword_declarations("def texture(shape, seed=0) -> np.ndarray: pass") == []
