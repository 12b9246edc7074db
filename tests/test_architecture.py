"""The package's layering: what the Snakefile imports stays light, and no module imports itself back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_the_names_the_snakefile_reads_import_neither_torch_nor_astropy():
    code = ("import sys, galsep.workflow, galsep.config, galsep.manifold.settings, galsep.manifold.workflow,"
            " galsep.sources.mast.products, galsep.sources.files.layout;"
            " galsep.workflow.method_kinds(); galsep.manifold.settings.methods();"
            " print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'astropy', 'h5py', 'galsim'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _graph() -> dict[str, set[str]]:
    """galsep module -> the galsep modules it imports anywhere (top level or inside functions)."""
    mods = {}
    for f in SRC.rglob("*.py"):
        name = ".".join(f.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = f
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("galsep"):
                names = [f"{node.module}.{a.name}" for a in node.names]
                graph[m] |= {n if n in mods else node.module for n in names} & set(mods) - {m}
            elif isinstance(node, ast.Import):
                graph[m] |= {a.name for a in node.names if a.name in mods} - {m}
    return graph


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_layers_do_not_reach_upwards():
    """data/ and inference/ never import the methods, products, evaluation or the experiments."""
    upper = ("galsep.methods", "galsep.products", "galsep.evaluation", "galsep.manifold", "galsep.separation")
    for m, deps in _graph().items():
        if m.startswith(("galsep.data", "galsep.inference")):
            assert not {d for d in deps if d.startswith(upper)}, (m, deps)
