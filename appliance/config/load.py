"""Reading a configuration file: validation errors restated as ``FILE:LINE: key.path: what is wrong``.

Relative paths resolve against the file's folder; numeric errors name the whole allowed range.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ValidationError

from appliance.config.pose import BlazePoseConfig, KeypointsPoseConfig, OnnxPoseConfig
from appliance.config.schema import (
    CONFIG_SCHEMA_VERSION,
    ApplianceConfig,
    ConfigError,
    JsonlSinkConfig,
    MqttSinkConfig,
    StdoutSinkConfig,
)
from appliance.config.sparkplug import SparkplugSinkConfig
from appliance.config.yaml_source import (
    Located,
    clean_loc,
    compose,
    expand_env,
    loc_text,
    read_config_text,
)
from appliance.redact import redact

_TAGGED: dict[str, type[BaseModel]] = {
    "blazepose": BlazePoseConfig,
    "onnx": OnnxPoseConfig,
    "keypoints": KeypointsPoseConfig,
    "stdout": StdoutSinkConfig,
    "jsonl": JsonlSinkConfig,
    "mqtt": MqttSinkConfig,
    "sparkplug": SparkplugSinkConfig,
}


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The one settings section an annotation holds (``X``, ``X | None``, ``list[X]``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = {m for arg in get_args(annotation) if (m := _model_in(arg)) is not None}
    return found.pop() if len(found) == 1 else None


def _constraints(raw_loc: tuple[Any, ...], root: type[BaseModel]) -> list[Any]:
    """The ge/gt/le/lt metadata of the field a validation error points at (raw pydantic location)."""
    model: type[BaseModel] | None = root
    annotation: Any = None
    metadata: list[Any] = []
    for part in raw_loc:
        if isinstance(part, str) and get_origin(annotation) is dict:  # a key of a mapping (a camera id)
            annotation = get_args(annotation)[1]
            model = _model_in(annotation)
        elif isinstance(part, str) and model is not None and part in model.model_fields:
            info = model.model_fields[part]
            annotation, metadata = info.annotation, list(info.metadata)
            model = _model_in(annotation)
        elif isinstance(part, str) and part in _TAGGED:
            model = _TAGGED[part]
        elif isinstance(part, int) and get_origin(annotation) is list:  # an item of a list
            annotation = get_args(annotation)[0]
        elif isinstance(part, int) and get_origin(annotation) is tuple and part < len(get_args(annotation)):
            annotation = get_args(annotation)[part]
            extra = getattr(annotation, "__metadata__", ())
            metadata = [m for f in extra for m in getattr(f, "metadata", [f])]
        elif not isinstance(part, int):
            break
    return metadata


def _range_text(raw_loc: tuple[Any, ...], root: type[BaseModel]) -> str:
    """``from 1 to 900``, ``more than 0 and at most 3600``, ``at least 1``..., or "" without bounds."""
    lo = hi = None
    lo_open = hi_open = False
    for m in _constraints(raw_loc, root):
        if isinstance(m, annotated_types.Ge | annotated_types.Gt):
            lo, lo_open = (m.ge, False) if isinstance(m, annotated_types.Ge) else (m.gt, True)
        elif isinstance(m, annotated_types.Le | annotated_types.Lt):
            hi, hi_open = (m.le, False) if isinstance(m, annotated_types.Le) else (m.lt, True)
    lower = None if lo is None else (f"more than {lo:g}" if lo_open else f"at least {lo:g}")
    upper = None if hi is None else (f"less than {hi:g}" if hi_open else f"at most {hi:g}")
    if lower and upper:
        return f"from {lo:g} to {hi:g}" if not (lo_open or hi_open) else f"{lower} and {upper}"
    return lower or upper or ""


def _range_message(err: Any, root: type[BaseModel]) -> str | None:
    """A numeric error restated with the whole allowed range and the value given."""
    kind = err["type"]
    allowed = _range_text(tuple(err["loc"]), root)
    value = err.get("input")
    got = f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)[:40]
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and allowed:
        return f"out of range: must be {allowed} (got {got})"
    if kind == "finite_number":
        return f"must be a finite number{' ' + allowed if allowed else ''} (got {got})"
    if allowed and kind.startswith(("int_", "float_")):  # '1e20' or 1.5 for a whole number
        return f"{err['msg']} (got {got}); allowed: {allowed}"
    return None


def parse_config(
    text: str,
    source: str = "<config>",
    base_dir: Path | None = None,
    env_defaults: Mapping[str, str] | None = None,
) -> ApplianceConfig:
    """Validate YAML text; relative paths resolve against ``base_dir`` (the config file's folder).

    ``${NAME}`` in string values expands from the environment, else from ``env_defaults`` (how
    ``check-config`` stands in for systemd's ``CREDENTIALS_DIRECTORY`` outside the unit).
    """
    node, data = compose(text, source)
    if not isinstance(data, dict) or node is None:
        raise ConfigError(f"{source}: expected a mapping of settings (schema_version, appliance_id, ...)")
    located = Located(node)
    data = expand_env(data, (), source, located, {**(env_defaults or {}), **os.environ})
    try:
        config = ApplianceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(validation_lines(exc, source, located))) from None
    return _resolve_paths(config, base_dir) if base_dir is not None else config


def validation_lines(
    exc: ValidationError, source: str, located: Located | None, root: type[BaseModel] = ApplianceConfig
) -> list[str]:
    """Each validation error as ``FILE:LINE: key.path: what is wrong`` (``root``: the file's model;
    without ``located``, data that came from no file: ``key.path: what is wrong``)."""
    lines = []
    for err in exc.errors():
        loc = clean_loc(tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "type")
            expected = err.get("ctx", {}).get("expected_tags", "")
            msg = f"unknown or missing type; one of: {expected}"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt, or not valid in this section)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "literal_error" and loc == ("schema_version",):
            msg = f"this appliance reads configuration schema version {CONFIG_SCHEMA_VERSION}"
        else:
            msg = _range_message(err, root) or msg
        where = f"{source}:{located.line_of(loc)}: " if located is not None else ""
        lines.append(redact(f"{where}{loc_text(loc)}: {msg}"))
    return lines


def _resolve_paths(config: ApplianceConfig, base: Path) -> ApplianceConfig:
    def fix(p: Path | None) -> Path | None:
        return None if p is None or p.is_absolute() else base / p

    def fix_model(m: BaseModel) -> BaseModel:
        updates: dict[str, Any] = {}
        for name in type(m).model_fields:
            value = getattr(m, name)
            if isinstance(value, Path):
                updates[name] = fix(value)
            elif isinstance(value, BaseModel):  # nested sections (mqtt tls: ca_file, cert_file, ...)
                updates[name] = fix_model(value)
        return m.model_copy(update={k: v for k, v in updates.items() if v is not None})

    cameras = []
    for cam in config.cameras:
        src = cam.source
        if isinstance(src, str) and _looks_like_relative_file(src) and (base / src).exists():
            cam = cam.model_copy(update={"source": str(base / src)})
        cameras.append(cam)
    model = fix_model(config.model)
    if model.trusted_keys is None:
        model = model.model_copy(update={"trusted_keys": base / "trusted-keys"})
    return config.model_copy(
        update={
            "state_dir": fix(config.state_dir) or config.state_dir,
            "model": model,
            "pose": fix_model(config.pose),
            "sinks": [fix_model(s) for s in config.sinks],
            "web": fix_model(config.web),
            "cameras": cameras,
        }
    )


def _looks_like_relative_file(src: str) -> bool:
    return "://" not in src and "!" not in src and not src.startswith("/") and not src.isdigit()


def key_locator(path: str | Path) -> Callable[[tuple[Any, ...]], str]:
    """``where(("cameras", 0, "source"))`` -> ``FILE:LINE: cameras[0].source`` for a file that loads."""
    try:
        node, _ = compose(Path(path).read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, ConfigError):
        node = None
    located = Located(node) if node is not None else None

    def where(loc: tuple[Any, ...]) -> str:
        line = f":{located.line_of(loc)}" if located is not None else ""
        return f"{path}{line}: {loc_text(loc)}"

    return where


def load_config(
    path: str | Path, env_defaults: Mapping[str, str] | None = None, console_zones: bool = True
) -> ApplianceConfig:
    """Read and validate a config file (see :func:`parse_config`); at most 1 MiB. With
    ``console_zones``, the zones saved in the web console replace those of the cameras they name
    (:mod:`appliance.config.console_zones`)."""
    path = Path(path)
    try:
        text = read_config_text(path, "a configuration file")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    cfg = parse_config(text, str(path), path.resolve().parent, env_defaults)
    if not console_zones:
        return cfg
    from appliance.config.console_zones import apply_console_zones, read_console_zones

    return apply_console_zones(cfg, read_console_zones(cfg.state_dir))
