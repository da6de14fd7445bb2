"""Imports flow one way (DESIGN section 2): every ``eeca`` import in src/eeca, at any depth.

Layers: ``config, io, llm_client, stats, images`` (0) -> ``gldv2, synth, knowledge, mgld, model`` (1) ->
``train, evaluate`` (2) -> ``experiments`` (3) -> ``cli`` (4). A module may import its own area and
lower layers; peers in one layer do not import each other unless listed in ``EXCEPTIONS`` with the
reason. ``report`` reads files only: it may import layer 0 and nothing else (its no-torch check is
in tests/test_report.py). Imports inside functions count too: a lazy import is still a dependency.
"""

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "eeca"

LAYERS: dict[str, int] = {
    "eeca": 0, "config": 0, "io": 0, "llm_client": 0, "stats": 0, "images": 0, "logs": 0,
    "gldv2": 1, "synth": 1, "knowledge": 1, "mgld": 1, "model": 1,
    "train": 2, "evaluate": 2,
    "experiments": 3,
    "cli": 4,
    "__main__": 5,  # `python -m eeca`: the entry point above the cli
}
REPORT_MAY_IMPORT = {area for area, layer in LAYERS.items() if layer == 0}

# (importing area, imported module) -> why this peer import is the right dependency
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("config", "eeca.io"): "load_config raises io.InputError, the one error type every verb reports as file + field",
    ("stats", "eeca.io"): "two cells that share no judged question are a bad input, reported as io.InputError",
    ("synth", "eeca.gldv2.paths"): "the synthetic world is written in GLDv2's image layout, defined once there",
    ("mgld", "eeca.gldv2.paths"): "an MGLD record's image is the GLDv2 path of its id (DESIGN 3)",
    ("synth", "eeca.mgld.questions"): "the testbed's tokenizer covers MGLD's question set, and its skyline "
                                      "records ask MGLD's questions, drawn the MGLD way",
    ("synth", "eeca.mgld.annotators"): "the testbed's tokenizer covers the template annotator's answers "
                                       "(a real LLM's tokenizer covers English)",
}


def _area_of(path: Path) -> str:
    """``src/eeca/knowledge/score.py`` -> ``knowledge``; ``src/eeca/io.py`` -> ``io``."""
    area = path.relative_to(SRC).parts[0].removesuffix(".py")
    return "eeca" if area == "__init__" else area


def _imported_areas(path: Path) -> list[tuple[int, str, str]]:
    """(line, area, module) for every import of an ``eeca`` module in ``path``, nested ones included."""
    module = ["eeca", *path.relative_to(SRC).with_suffix("").parts]
    package = module if module[-1] == "__init__" else module[:-1]
    if package[-1] == "__init__":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            dotted = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            # the alias may name a module (`from eeca import knowledge`) or an attribute: keep both as a path
            dotted = [target + [alias.name] for alias in node.names]
        else:
            continue
        for parts in dotted:
            if parts[0] != "eeca":
                continue
            area = parts[1] if len(parts) > 1 and parts[1] in LAYERS else "eeca"
            found.append((node.lineno, area, ".".join(parts)))
    return found


def _covers(key: tuple[str, str], source: str, module: str) -> bool:
    return source == key[0] and (module == key[1] or module.startswith(key[1] + "."))


def _excepted(source: str, module: str) -> bool:
    return any(_covers(key, source, module) for key in EXCEPTIONS)


MODULES = sorted(SRC.rglob("*.py"))


def test_every_area_has_a_layer():
    areas = {_area_of(p) for p in MODULES} - {"report"}
    assert areas <= set(LAYERS), f"areas without a layer: {sorted(areas - set(LAYERS))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_flow_one_way(path):
    source = _area_of(path)
    bad = []
    for line, target, module in _imported_areas(path):
        if target == source or _excepted(source, module):
            continue
        if source == "report":
            ok = target in REPORT_MAY_IMPORT
        else:
            ok = target != "report" and LAYERS[target] < LAYERS[source]
        if not ok:
            bad.append(f"{path.relative_to(SRC.parent)}:{line}: {source} imports {target}")
    assert not bad, "imports against DESIGN section 2:\n" + "\n".join(bad)


def test_exceptions_are_still_used():
    imports = [(_area_of(p), m) for p in MODULES for _, _, m in _imported_areas(p)]
    stale = [key for key in EXCEPTIONS if not any(_covers(key, a, m) for a, m in imports)]
    assert not stale, f"stale exceptions: {stale}"


def test_scanner_sees_nested_relative_and_from_package_imports(tmp_path, monkeypatch):
    """The scanner itself: an import inside a function, a relative import, ``from eeca import x``."""
    pkg = tmp_path / "eeca" / "model"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text("def f():\n    from ..train import recipes\n"
                              "from eeca import mgld\nimport eeca.io\nimport numpy\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path / "eeca")
    assert sorted(_imported_areas(pkg / "m.py")) == [(2, "train", "eeca.train.recipes"), (3, "mgld", "eeca.mgld"),
                                                     (4, "io", "eeca.io")]
    assert _excepted("synth", "eeca.gldv2.paths.image_path") and not _excepted("synth", "eeca.gldv2.ingest")
