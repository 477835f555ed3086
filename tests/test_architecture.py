"""The layers as a checked contract: import-linter's contracts (pyproject.toml) and no private names across modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "core", "models", "menus", "web")
CHECKED = [*(ROOT / p for p in PACKAGES), ROOT / "benchmarks", ROOT / "scripts", ROOT / "main.py"]


def test_the_import_contracts_hold() -> None:
    """menus above app above models above core, no cycles between siblings, no UI below menus."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def private_imports(source: str, module: str) -> list[str]:
    """Private names ``module`` takes from another of the project's modules: ``from x import _y``,
    or ``x._y`` on a project module bound by ``import x`` / ``import x as z``."""
    found, bound = [], set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            if node.module != module:
                found += [f"from {node.module} import {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
            bound.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    bound.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in bound):
            found.append(f"{node.value.id}.{node.attr}")
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
              and isinstance(node.value, ast.Attribute)):
            chain, inner = [node.value.attr], node.value.value
            while isinstance(inner, ast.Attribute):
                chain.insert(0, inner.attr)
                inner = inner.value
            if isinstance(inner, ast.Name) and inner.id in PACKAGES and inner.id in bound:
                found.append(".".join([inner.id, *chain, node.attr]))
    return found


def test_the_private_name_check_finds_what_it_should() -> None:
    source = ("from app.training import _augment, train\nimport app.recipes\nimport app.evaluate as ev\n"
              "from app import plots\napp.recipes._secret()\nev._hidden\nplots._figure\nself._own\n")
    assert sorted(private_imports(source, "app.other")) == [
        "app.recipes._secret", "ev._hidden", "from app.training import _augment", "plots._figure"]
    assert private_imports("from app.training import _augment\n", "app.training") == []


def test_no_module_takes_a_private_name_from_another() -> None:
    """A leading underscore means "only this module relies on it": the rest use public names
    (tests may reach inside what they test)."""
    offenders = []
    for place in CHECKED:
        for path in ([place] if place.is_file() else sorted(place.rglob("*.py"))):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            offenders += [f"{path.relative_to(ROOT)}: {found}" for found in private_imports(path.read_text(), module)]
    assert offenders == [], "\n".join(offenders)
