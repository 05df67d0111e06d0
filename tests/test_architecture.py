"""The house reads one way: no import circles in service/ or export/, imports in service/ point down the layers
(doors -> pipeline -> recognition -> audio), and export/ takes from service/ only the model contract and the
decoding it verifies against NeMo (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# service/'s layers, lowest first: a module may import its own layer and the ones below, never one above.
LAYERS = [
    {"service", "service.errors", "service.manifest"},
    {"service.audio"},
    {"service.recognition"},
    {"service.catalog", "service.metrics"},
    {"service.pipeline"},
    {"service.api"},
    {"service.settings", "service.patches", "service.remote", "service.components", "service.service"},
]
# What export/ may import from service/: the model contract (manifest, tokens) and the pure decoding the export
# proves equal to NeMo before anything is registered (greedy CTC, streaming's buffered CTC).
EXPORT_MAY_USE = {
    "service.manifest",
    "service.recognition.tokens",
    "service.recognition.ctc",
    "service.recognition.streaming",
}


def modules() -> dict[str, Path]:
    found = {}
    for top in ("service", "export", "asr_transcribe"):
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, at any depth of its code (imports inside functions count)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer(module: str) -> int:
    for rank, members in enumerate(LAYERS):
        if any(module == m or (m != "service" and module.startswith(m + ".")) for m in members):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/architecture.md)")


def upward(edges: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} -> {b}"
        for a, targets in edges.items()
        if a.startswith("service")
        for b in targets
        if b.startswith("service") and layer(b) > layer(a)
    )


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_service_imports_point_down_the_layers() -> None:
    assert upward(graph()) == []


def test_export_takes_only_the_contract_from_service_and_service_never_imports_export() -> None:
    edges = graph()
    from_export = {
        f"{a} -> {b}" for a, t in edges.items() if a.startswith("export") for b in t if b.startswith("service")
    }
    assert {e for e in from_export if e.split(" -> ")[1] not in EXPORT_MAY_USE} == set()
    assert [
        f"{a} -> {b}" for a, t in edges.items() if a.startswith("service") for b in t if b.startswith("export")
    ] == []


def test_the_command_line_client_is_a_client() -> None:
    """asr_transcribe talks to the service over HTTP only: it imports nothing of service/ or export/ (a user
    installs it beside a remote service), and nothing there imports it."""
    edges = graph()
    assert any(a.startswith("asr_transcribe") for a in edges)
    crossing = [
        f"{a} -> {b}"
        for a, t in edges.items()
        for b in t
        if a.startswith("asr_transcribe") != b.startswith("asr_transcribe")
    ]
    assert crossing == []


@pytest.mark.parametrize(
    ("edges", "problem"),
    [
        ({"service.audio.a": {"service.audio.b"}, "service.audio.b": {"service.audio.a"}}, "circle"),
        ({"service.audio.decode": {"service.api.replies"}, "service.api.replies": set()}, "upward"),
        ({"service.api.guard": {"service.audio.decode"}, "service.audio.decode": set()}, None),
    ],
)
def test_the_checks_find_what_they_look_for(edges: dict[str, set[str]], problem: str | None) -> None:
    assert bool(cycles(edges)) == (problem == "circle")
    assert bool(upward(edges)) == (problem == "upward")


def rendered() -> str:
    """The import graph of service/ as docs/architecture.md shows it: module -> what it imports (prefix left out)."""
    edges = graph()

    def short(name: str) -> str:
        return name.removeprefix("service.") if name != "service" else "(package)"

    lines = []
    for name in sorted(n for n in edges if n.startswith("service.")):
        targets = sorted(short(t) for t in edges[name] if t.startswith("service.") and not t.endswith("__init__"))
        lines.append(f"{short(name)} -> {', '.join(targets) or '-'}")
    return "\n".join(lines) + "\n"


def test_the_architecture_page_shows_the_graph_as_it_is() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    shown = page.split("<!-- import graph -->\n```text\n", 1)[1].split("```", 1)[0]
    assert shown == rendered(), "docs/architecture.md's import graph is stale: python -m tests.test_architecture"


if __name__ == "__main__":
    print(rendered(), end="")
