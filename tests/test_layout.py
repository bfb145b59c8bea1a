"""How the package is laid out: the rules its modules keep.

- No module imports an underscore name from a module in another folder, nor one
  top-level module from another: what a module shares, it names without an
  underscore (the module itself stays private).
- No function has more than 90 lines of code (docstring, comments and blank lines
  not counted).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxode"
MAX_LINES = 90


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _private_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        private = [a.name for a in node.names
                   if a.name.startswith("_") and not a.name.startswith("__")]
        if not private:
            continue
        base = path.parent
        for _ in range(node.level - 1):
            base = base.parent
        target = base.joinpath(*(node.module or "").split(".")) if node.module else base
        folder = target if target.is_dir() else target.parent
        if folder != path.parent or path.parent == package:
            found.append(f"{path.relative_to(package.parent)}:{node.lineno} imports "
                         f"{', '.join(private)} from {'.' * node.level}"
                         f"{node.module or ''}")
    return found


def _code_lines(node: ast.AST, lines: list[str]) -> int:
    body = node.body
    doc = None
    if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)):
        doc = range(body[0].lineno, body[0].end_lineno + 1)
    count = 0
    for number in range(node.lineno, node.end_lineno + 1):
        text = lines[number - 1].strip()
        if text and not text.startswith("#") and (doc is None or number not in doc):
            count += 1
    return count


def test_no_private_name_crosses_a_module_boundary():
    offenders = [line for path in _modules() for line in _private_imports(path)]
    assert not offenders, "\n".join(offenders)


def test_no_function_is_longer_than_90_lines_of_code():
    offenders = []
    for path in _modules():
        text = path.read_text()
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, lines)
                if n > MAX_LINES:
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} "
                                     f"{node.name}: {n} lines")
    assert not offenders, "\n".join(offenders)


def test_the_rules_see_an_offence(tmp_path):
    """The checks above find what they look for (so a pass means something)."""
    package = tmp_path / "jaxode"
    (package / "sub").mkdir(parents=True)
    (package / "_a.py").write_text("from ._b import _hidden\n")
    (package / "sub" / "_c.py").write_text("from ._d import _ok\nfrom .._b import _no\n")
    assert len(_private_imports(package / "_a.py", package)) == 1
    assert [s.split(" imports ")[1] for s in
            _private_imports(package / "sub" / "_c.py", package)] == ["_no from .._b"]
    body = "\n".join(["def f():", '    """doc"""', "    # note", ""] + ["    x = 1"] * 91)
    node = ast.parse(body).body[0]
    assert _code_lines(node, body.splitlines()) == 92
