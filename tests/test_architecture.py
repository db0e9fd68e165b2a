"""The house by role stays mapped and layered: docs/architecture.md names every module under core/src/icc,
the import-linter contracts of pyproject.toml hold, and no two modules import each other."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "core" / "src"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def modules() -> list[str]:
    """Every module and package under core/src/icc, dotted."""
    names = []
    for path in sorted((SRC / "icc").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_under_core_src_icc_is_named_in_the_architecture_page() -> None:
    text = ARCHITECTURE.read_text()
    named = set(re.findall(r"`(icc(?:\.\w+)*)`", text)) | set(re.findall(r"\b(icc(?:\.\w+)+)\b", text))
    missing = [name for name in modules() if name not in named and name != "icc"]
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"


def test_the_architecture_page_is_in_the_site_navigation() -> None:
    assert "architecture.md" in (ROOT / "mkdocs.yml").read_text()


def _lint_imports() -> str:
    scripts = Path(sysconfig.get_path("scripts"))
    command = scripts / "lint-imports"
    if not command.exists():
        pytest.skip("import-linter is not installed (the lint and test dependency groups have it)")
    return str(command)


def test_the_import_contracts_hold() -> None:
    """Layers, only icc.store naming a backend, the queue's model below the store, no cycles."""
    proc = subprocess.run(
        [_lint_imports(), "--no-cache"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_no_two_modules_import_each_other() -> None:
    """A cycle of imports between modules, found in grimp's graph: function-level imports and those under
    TYPE_CHECKING count too (a type-only cycle still ties two modules together)."""
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(SRC))
    try:
        graph = grimp.build_graph("icc", exclude_type_checking_imports=False, cache_dir=None)
    finally:
        sys.path.remove(str(SRC))
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain is not None:
                cycles.append(" -> ".join((module, *chain)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_icc_store_names_a_backend_but_for_the_public_sqlite_transport() -> None:
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (backends,) = [c for c in contracts if c["id"] == "backends"]
    # icc db works through icc.store.admin, the tick finds its SQLite file with icc.store.sqlite_file.
    assert backends["ignore_imports"] == ["icc.queue -> icc.store.sqlite.queues"]


def function_level_imports(path: Path) -> list[int]:
    """The line numbers of the import statements inside a function body of ``path`` (nested ones too)."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines.update(
                inner.lineno for inner in ast.walk(node) if isinstance(inner, ast.Import | ast.ImportFrom)
            )
    return sorted(lines)


def test_every_function_level_import_says_why_it_is_lazy() -> None:
    """Issue 17: an import inside a function only where the idle path needs it, with a ``# lazy: why`` comment
    on its line (or the line above, for an import over several lines)."""
    unexplained = []
    for path in sorted((SRC / "icc").rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        text = path.read_text().splitlines()
        for line in function_level_imports(path):
            if "# lazy" not in text[line - 1] and (line < 2 or "# lazy" not in text[line - 2]):
                unexplained.append(f"core/src/{relative}:{line}: {text[line - 1].strip()}")
    assert not unexplained, "function-level imports without a `# lazy: why` comment:\n" + "\n".join(
        unexplained
    )
