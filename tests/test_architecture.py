"""docs/architecture.md's module table is the import order: a module imports only modules listed below it."""

import ast
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "renderer"


def _documented_order() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## Modules, top to bottom", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([\w.]+)` \|", table, flags=re.M)


def _modules() -> dict[str, list[Path]]:
    """Top-level module name → its source files (a package's files all count as the package)."""
    found: dict[str, list[Path]] = {}
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        found.setdefault(top, []).append(path)
    return found


def _imports(path: Path, module: str) -> set[str]:
    """The renderer modules a file imports, at module level or inside functions."""
    depth_to_package = len(path.relative_to(PACKAGE).parts)  # 1 in renderer/, 2 in renderer/<package>/
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level != depth_to_package:
                continue  # a sibling inside the same package
            target = (node.module or "").split(".")[0]
            names.update([target] if target else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "renderer":
            parts = node.module.split(".")
            names.update([parts[1]] if len(parts) > 1 else [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("renderer.") and len(a.name.split(".")) > 1)
    return names - {"__version__", module}


def test_every_module_is_in_the_documented_order():
    order = _documented_order()
    assert len(order) == len(set(order)), "a module is listed twice in docs/architecture.md"
    missing = sorted(set(_modules()) - set(order))
    assert not missing, f"add these modules to docs/architecture.md's table: {missing}"
    gone = sorted(set(order) - set(_modules()))
    assert not gone, f"docs/architecture.md lists modules that no longer exist: {gone}"


def test_no_module_imports_one_listed_above_it():
    order = _documented_order()
    rank = {name: i for i, name in enumerate(order)}
    upward = []
    for module, paths in _modules().items():
        for path in paths:
            for target in _imports(path, module):
                if target == "__init__" or target not in rank:
                    continue
                if module in rank and rank[target] <= rank[module]:
                    upward.append(f"{path.relative_to(ROOT)} imports {target}")
    # `__init__` imports `api` lazily on first use of renderer.render: the one documented exception.
    upward = [u for u in upward if u != "renderer/__init__.py imports api"]
    assert not upward, upward


def test_importing_the_engine_changes_nothing_for_the_host_program():
    # A notebook that imports svdrender keeps its own diffusers/transformers log levels until svdrender loads a model.
    code = ("from diffusers.utils import logging as d; from transformers.utils import logging as t\n"
            "d.set_verbosity_info(); t.set_verbosity_info()\n"
            "import renderer.engine\n"
            "print(d.get_verbosity(), t.get_verbosity())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "SVDRENDER_DEBUG": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(logging.INFO)] * 2


def test_the_speed_packages_profile_data_is_torch_free_and_its_kernel_registers_nothing_on_import():
    # validate, plan and the CLI's option parsing read profiles and settings; the GEGLU op is registered only when
    # the engine makes the first fused layer.
    code = ("import sys\n"
            "import renderer.speed.profiles, renderer.speed.settings\n"
            "print('torch' in sys.modules)\n"
            "import torch, renderer.speed.geglu\n"
            "print(hasattr(torch.ops.svdrender, 'geglu'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_every_subpackage_is_in_the_distribution():
    # A subpackage missing from pyproject's list works in an editable checkout but is absent from a built wheel.
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found == listed
