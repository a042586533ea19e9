"""The YAML side of a configuration: a bounded loader, line numbers for keys, ``${NAME}`` expansion.

A configuration is composed node by node so an error can name its line, and refused before it can
cost much: over 1 MiB, nested past :data:`MAX_CONFIG_DEPTH`, or aliases that expand it past
:data:`MAX_CONFIG_VALUES` values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from appliance.config.schema import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

MAX_CONFIG_BYTES = 1 << 20  #: a configuration file is a few kB; refuse anything near this
MAX_CONFIG_VALUES = 10_000  #: YAML nodes after alias expansion (a 16-camera config has ~400)
MAX_CONFIG_DEPTH = 32  #: nesting of mappings and lists (the schema needs 5)
CREDENTIALS_HINT = (
    " (systemd sets it for the unit's LoadCredential= entries: start the appliance with systemctl, or "
    "export CREDENTIALS_DIRECTORY=<folder holding the credential files> to run it by hand)"
)


class Located:
    """YAML node tree kept beside the data so a validation error can name a line."""

    def __init__(self, node: yaml.Node) -> None:
        self.node = node

    def line_of(self, loc: tuple[Any, ...]) -> int:
        node = self.node
        line = node.start_mark.line + 1
        for key in loc:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == key:
                        line, nxt = k.start_mark.line + 1, v
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                nxt = node.value[key]
                line = nxt.start_mark.line + 1
            if nxt is None:
                break
            node = nxt
        return line


def expand_env(value: Any, loc: tuple[Any, ...], where: str, located: Located, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: expand_env(v, (*loc, k), where, located, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, (*loc, i), where, located, env) for i, v in enumerate(value)]
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                line = located.line_of(loc)
                hint = CREDENTIALS_HINT if name == "CREDENTIALS_DIRECTORY" else ""
                raise ConfigError(
                    f"{where}:{line}: {loc_text(loc)}: environment variable {name} is not set{hint}"
                )
            return env[name]

        return _ENV.sub(sub, value)
    return value


def loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # Discriminated unions add the tag ('blazepose', 'mqtt', ...) as a location level: drop it.
    tags = {"blazepose", "onnx", "keypoints", "stdout", "jsonl", "mqtt", "sparkplug"}
    return tuple(p for i, p in enumerate(loc) if not (isinstance(p, str) and p in tags and i > 0))


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than :data:`MAX_CONFIG_DEPTH` as it composes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_CONFIG_DEPTH:
                raise yaml.YAMLError(f"nested deeper than {MAX_CONFIG_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def read_config_text(path: Path, what: str) -> str:
    """The text of a settings file (``what`` it should be), refused past :data:`MAX_CONFIG_BYTES`
    before it is all read. A missing file raises ``FileNotFoundError`` (each caller says what that
    means); anything else unreadable is a :class:`ConfigError`."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not {what}")
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None


def compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The YAML node graph and the data built from it, refused when aliases would blow it up."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters; a configuration is at most {MAX_CONFIG_BYTES}")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expansion(node, source)
        return node, loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or _mark_of(loader)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{line}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()


def _mark_of(loader: yaml.SafeLoader) -> yaml.Mark | None:
    """Where the loader stands (for errors raised by :class:`_BoundedLoader` itself)."""
    try:
        return loader.peek_event().start_mark
    except yaml.YAMLError:
        return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a document whose aliases (``*name``) expand it past :data:`MAX_CONFIG_VALUES` values.

    PyYAML shares an anchored node between its aliases, so nine lines can stand for 10^9 values that
    every later walk (environment expansion, validation) would visit one by one: 52 s of CPU and
    1.2 GB for the classic alias bomb. The expanded size is counted per distinct node, without
    expanding anything; a node that contains itself through an alias is refused too.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            line = node.start_mark.line + 1
            raise ConfigError(f"{source}:{line}: a YAML alias refers to the node that contains it (a cycle)")
        open_nodes.add(key)
        total = 1
        for child in _children(node):
            total += size(child)
            if total > MAX_CONFIG_VALUES:
                break  # enough to refuse; stops the count from costing what the expansion would
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if size(root) <= MAX_CONFIG_VALUES:
        return
    node = root  # name the smallest part that is still too big: where the alias use explodes
    while True:
        big = [c for c in _children(node) if sizes.get(id(c), 0) > MAX_CONFIG_VALUES]
        if not big:
            break
        node = big[0]
    raise ConfigError(
        f"{source}:{node.start_mark.line + 1}: YAML aliases (*name) expand the configuration past "
        f"{MAX_CONFIG_VALUES} values; write the settings out instead"
    )
