"""Structural measures of the package, for the architecture notes in docs/DESIGN.md.

    python scripts/structure_stats.py            # a markdown table
    python scripts/structure_stats.py --json     # the same figures as JSON

Measures, from the source alone (nothing is imported or run): the largest module and the longest function
(lines), functions of 50+ lines, `cfg: Any` annotations, imports of stage modules from libraries, modules
outside the toy world that name it, and the number of import layers (the longest chain of package-internal
imports, each cycle counted as one layer).
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "t2i_debias"
STAGE_PACKAGE = "t2i_debias.stages"
TOY_PACKAGE = "t2i_debias.toyworld"
ABOVE_TOY = ("t2i_debias.stages", "t2i_debias.pipeline", "t2i_debias.cli", TOY_PACKAGE)


def module_name(path: Path) -> str:
    """Dotted module name of a file under the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, name: str) -> set[str]:
    """Package-internal modules a module imports (module level and inside functions, importlib strings)."""
    out: set[str] = set()
    pkg = name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("t2i_debias"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("t2i_debias"):
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("t2i_debias."):
            out.add(node.value)
    return out


def stage_modules(trees: dict[str, ast.AST]) -> set[str]:
    """The stage modules: those pipeline.STAGES names (by string), and every module of the stages package."""
    named = {n.value for n in ast.walk(trees.get("t2i_debias.pipeline", ast.Module(body=[], type_ignores=[])))
             if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in trees}
    return named | {m for m in trees if m.startswith(STAGE_PACKAGE)}


def layers(graph: dict[str, set[str]]) -> int:
    """Longest chain in the import graph after collapsing cycles (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    comp: dict[str, int] = {}
    stack: list[str] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            c = len(set(comp.values()))
            while True:
                w = stack.pop()
                comp[w] = c
                if w == v:
                    break

    import sys
    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    dag: dict[int, set[int]] = {}
    for v, ws in graph.items():
        dag.setdefault(comp[v], set()).update(comp[w] for w in ws if comp[w] != comp[v])
    depth: dict[int, int] = {}

    def deep(c: int) -> int:
        if c not in depth:
            depth[c] = 1 + max((deep(d) for d in dag.get(c, ())), default=0)
        return depth[c]

    return max(deep(c) for c in dag)


def measure() -> dict[str, object]:
    """Every figure of the table."""
    files = sorted(PKG.rglob("*.py"))
    trees = {module_name(f): ast.parse(f.read_text(encoding="utf-8")) for f in files}
    sizes = {module_name(f): len(f.read_text(encoding="utf-8").splitlines()) for f in files}
    funcs = [(n.end_lineno - n.lineno + 1, f"{m}.{n.name}") for m, t in trees.items() for n in ast.walk(t)
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    cfg_any = sum(1 for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.arg)
                  and n.arg == "cfg" and isinstance(n.annotation, ast.Name) and n.annotation.id == "Any")
    stages = stage_modules(trees)
    raw = {m: imported(t, m) for m, t in trees.items()}
    graph = {m: {d for d in deps if d in trees and d != m} for m, deps in raw.items()}
    libs = [m for m in trees if m not in stages and not m.startswith(ABOVE_TOY[:3])]
    lib_to_stage = sorted((m, d) for m in libs for d in graph[m] if d in stages)
    toy_leak = sorted(m for m in trees if not m.startswith(ABOVE_TOY)
                      and any(d.startswith(TOY_PACKAGE) for d in raw[m]))
    largest = max(sizes.items(), key=lambda kv: kv[1])
    longest = max(funcs)
    return {"package_lines": sum(sizes.values()), "modules": len(trees),
            "largest_module": f"{largest[0]} ({largest[1]})",
            "modules_over_450": sum(1 for v in sizes.values() if v > 450),
            "longest_function": f"{longest[1]} ({longest[0]})",
            "functions_50_plus": sum(1 for n, _ in funcs if n >= 50),
            "functions_over_60": sum(1 for n, _ in funcs if n > 60),
            "cfg_any": cfg_any, "library_to_stage_imports": len(lib_to_stage),
            "modules_naming_toy_below_it": len(toy_leak), "import_layers": layers(graph)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    args = p.parse_args(argv)
    stats = measure()
    if args.json:
        print(json.dumps(stats, indent=1))
        return
    print("| measure | value |\n|---|---|")
    for k, v in stats.items():
        print(f"| {k.replace('_', ' ')} | {v} |")


if __name__ == "__main__":
    main()
