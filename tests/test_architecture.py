"""The layout's rules, checked on the source: one registry branches on a model's kind, the device's
package does not reach into the packages built on it, every package says what it holds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("appliance", "calibration", "export")


def sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_only_the_model_registry_compares_model_types():
    pattern = re.compile(r"model_type\s*(==|!=)|\.type\s*(==|!=)\s*[\"'](lstm_vae|posture_motion|fused)[\"']")
    found = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in sources(*PACKAGES)
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == [], found


def test_every_model_kind_is_registered_and_names_what_it_reads():
    from appliance.models.kind import INPUT_KINDS
    from appliance.models.registry import kind_of, kinds

    assert set(kinds()) == {"lstm_vae", "posture_motion", "fused"}
    for name, kind in kinds().items():
        assert kind.type == name and kind.input_kind in INPUT_KINDS and kind_of(name) is kind
    assert {t for t, k in kinds().items() if k.site_learnable} == {"posture_motion", "fused"}


def test_the_device_package_does_not_import_the_packages_built_on_it():
    """calibration and export build on appliance; only the command line (the composition root) wires
    calibration's commands in, and the keypoint readers hand ``.bvh`` files to export's numpy reader."""
    allowed = {
        ("appliance/cli/learning.py", "calibration"),
        ("appliance/cli/run.py", "calibration"),
        ("appliance/keypoints/readers.py", "export"),
    }
    found = sorted(
        (str(p.relative_to(ROOT)), m)
        for p in sources("appliance")
        for m in imported_modules(p)
        if m.split(".")[0] in ("calibration", "export")
        and (str(p.relative_to(ROOT)), m.split(".")[0]) not in allowed
    )
    assert found == [], found


def test_calibration_does_not_import_the_server_side():
    found = [
        str(p) for p in sources("calibration") if any(m.startswith("export") for m in imported_modules(p))
    ]
    assert found == []


def test_every_package_has_a_docstring_saying_what_it_holds():
    inits = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("__init__.py"))
    assert len(inits) >= 12
    for path in inits:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc) > 40, f"{path.relative_to(ROOT)} has no docstring"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path, known: set[str]) -> set[str]:
    """The known modules a file imports when it is imported (not inside functions, not for typing)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n in known}
    return out


def test_no_import_cycle_between_the_products_modules():
    """Depth-first search over the modules' import-time imports: a cycle would make import order matter."""
    paths = {module_name(p): p for p in sources(*PACKAGES)}
    known = set(paths)
    graph = {m: top_level_imports(p, known) - {m} for m, p in paths.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append([*stack[stack.index(n) :], n])
            elif n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == [], cycles[:3]
    assert len(graph) > 100 and sum(map(len, graph.values())) > 200  # the graph was really read


def test_modules_and_classes_stay_small_enough_to_hold_in_the_head():
    """No module of the device package over 500 lines, no class of the product over 250 lines."""
    long_modules = [
        (str(p.relative_to(ROOT)), n)
        for p in sources("appliance")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    ]
    long_classes = [
        (str(p.relative_to(ROOT)), node.name, node.end_lineno - node.lineno + 1)
        for p in sources("appliance", "calibration", "export")
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 250
    ]
    assert long_modules == [] and long_classes == [], (long_modules, long_classes)
