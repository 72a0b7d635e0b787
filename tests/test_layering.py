"""Layers: nuner_core never imports Prefect (tasks/ and flows/ do); inside it, no cycles, and stage
packages import neither the modules that assemble them nor each other (but for named contracts)."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import nuner_core

ROOT = Path(nuner_core.__file__).parent


def test_no_prefect_import_in_source():
    offenders = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] == "prefect"]
    assert offenders == []


def test_importing_every_module_does_not_load_prefect():
    modules = [m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="nuner_core.")]
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    code += "print('prefect' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------- layers inside nuner_core

# Modules of one stage package that another stage package may import: each a named, typed
# contract (what an artifact holds), not a reach into another stage's internals. Shared
# libraries are not stage packages and need no entry: nuner_core.dual_encoder (the two-encoder
# model, what a pretrain artifact holds, the annotated-data reader), nuner_core.text (words,
# windows), nuner_core.devices, nuner_core.tokenizer.
CONTRACTS = {
    "nuner_core.evaluation.benchmarks": "the benchmark registry and loader",
    "nuner_core.evaluation.sampling": "k~2k support sets",
    "nuner_core.evaluation.frozen": "word labels of a benchmark (word_labels)",
    "nuner_core.evaluation.zero_shot": "the zero-shot protocol (evaluate_zero_shot): adaptation measures retention with it",
    "nuner_core.pretraining.objective": "the two-encoder objective's pieces that adaptation continues: data layout, targets, loss, optimiser, freezing",
    "nuner_core.tagging": "the zero-shot tagger's public API (ZeroShotTagger, calibration, model card)",
    "nuner_core.tagging.documents": "the documents in and JSON lines out of tagging (shared with nuner predict)",
    "nuner_core.annotation.config": "how an LLM is reached: endpoint, key variable, limits, budget, prices (the evaluation's LLMs)",
    "nuner_core.annotation.batches": "prompts answered batch by batch through annotation's one request path (asking.py: leases, "
                                     "response cache, client, budget), the outcome per prompt (the evaluation's LLMs)",
}
# Modules that assemble the stages: a stage package importing them would import itself back.
ASSEMBLY = {"nuner_core.config", "nuner_core.registry", "nuner_core.pipeline"}


def _module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of ``root``'s package it imports (anywhere in its body, functions included)."""
    known = {_module_name(p, root) for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        name = _module_name(path, root)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in known and t != name}
        graph[name] = found
    return graph


def _stage_packages() -> set[str]:
    from nuner_core.registry import STAGES

    return {s.module.__name__.rsplit(".", 1)[0] for s in STAGES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of a graph (one path per back edge found by a depth-first walk)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def _package(module: str) -> str:
    """``nuner_core.store.local`` -> ``nuner_core.store``; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        home = _package(module)
        packages.setdefault(home, set()).update(_package(t) for t in targets if _package(t) != home)
    return packages


def test_no_import_cycles_between_modules():
    assert _cycles(_imports()) == [], "import cycles between modules"


def test_no_import_cycles_between_packages():
    """Packages form layers: ``tagging`` may build on ``dual_encoder``, never the other way round as well."""
    assert _cycles(_package_graph(_imports())) == [], "import cycles between packages of nuner_core"


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


INVENTORY = "nuner_core.store.inventory"


def test_the_store_backends_never_import_the_inventory():
    """``nuner store ls|du|gc`` is built above the store's backends (local, remote, their parts), never under them."""
    graph = _imports()
    backends = [m for m in graph if (m == "nuner_core.store" or m.startswith("nuner_core.store.")) and m != INVENTORY]
    assert len(backends) > 5 and INVENTORY in graph  # the check sees the package
    assert INVENTORY not in _reachable(graph, "nuner_core.store")  # `import nuner_core.store` alone never loads it
    assert [m for m in backends if INVENTORY in _reachable(graph, m)] == []
    assert "nuner_core.store.remote" in graph[INVENTORY]  # the inventory does stand on a backend


def test_the_package_cycle_check_fails_on_a_planted_cycle(tmp_path):
    root = tmp_path / "planted"
    for package in ("alpha", "beta", "gamma"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "alpha" / "a.py").write_text("from planted.beta.b import thing\n")
    (root / "beta" / "b.py").write_text("thing = 1\n\ndef later():\n    import planted.gamma.c  # inside a function still counts\n")
    (root / "gamma" / "c.py").write_text("import planted.alpha\n")
    graph = _imports(root)
    assert _cycles(graph) == []  # no module imports itself back ...
    assert _cycles(_package_graph(graph)) == [["planted.alpha", "planted.beta", "planted.gamma", "planted.alpha"]]  # ... but the packages do


def test_stage_packages_import_neither_the_assembly_nor_each_other():
    graph = _imports()
    packages = _stage_packages()
    offenders = []
    for module, targets in graph.items():
        home = next((p for p in packages if module == p or module.startswith(p + ".")), None)
        if home is None:
            continue
        for target in targets:
            if target in ASSEMBLY:
                offenders.append(f"{module} imports {target}")
            other = next((p for p in packages if target == p or target.startswith(p + ".")), None)
            if other is not None and other != home and target not in CONTRACTS:
                offenders.append(f"{module} imports {target} (another stage's package, not a named contract)")
    assert offenders == []


def test_the_layering_check_sees_imports():
    """The checks above must be able to fail: the evaluation stage does read the tagger's contract."""
    assert "nuner_core.tagging" in _imports()["nuner_core.evaluation.zero_shot"]
    assert "nuner_core.registry" in _imports()["nuner_core.pipeline"]
