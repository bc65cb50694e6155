"""The house rules of backfill/'s layout that import-linter cannot state (its contracts are in pyproject.toml).

- A private name (leading underscore) is used only inside its own package: another
  package that needs it needs a public name.
- Every module reads in one sitting: at most 600 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "backfill"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))  # __version__ is public


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package(module, path).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def test_no_private_name_is_imported_from_another_package() -> None:
    modules = _modules()
    crossings = []
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _absolute(module, path, node)
            if not source.startswith("backfill"):
                continue
            source_package = _package(source, modules[source]) if source in modules else source
            for alias in node.names:
                if _private(alias.name) and source_package != _package(module, path):
                    crossings.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {source}.{alias.name}")
    assert not crossings, "\n".join(crossings)


def test_every_module_reads_in_one_sitting() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules().values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_relative_imports_are_resolved_as_python_does() -> None:
    """The private-name check reads `from ..x import _y` as Python does (else it would see no crossing)."""
    tree = ast.parse("from ..s3 import _session\nfrom .model import _side\n")
    path = PACKAGE / "setup" / "aws.py"
    first, second = (n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert _absolute("backfill.setup.aws", path, first) == "backfill.s3"
    assert _absolute("backfill.setup.aws", path, second) == "backfill.setup.model"
    assert _package("backfill.setup.aws", path) == "backfill.setup"
