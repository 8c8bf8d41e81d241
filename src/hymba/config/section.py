"""One loader and one set of checks for every TOML section: ``[model]``, ``[data]``, ``[train]``, and the
ablation's ``[bench]`` and ``[recall]``.

A section is a dataclass deriving from :class:`Section`, named by its ``SECTION`` class attribute. Values are
checked at construction (every float field finite, then the section's :meth:`Section.validate`), and every
error names the key as ``--set`` spells it: ``recall.power_a=0.0 is invalid: must be > 0``. Reading a TOML table
into a section (:func:`section_from_dict`) rejects unknown keys and wrongly typed values first, naming the
table. :func:`load_sections` reads a whole file: defaults, an optional roadmap scale (``scale = "tiny"``),
the file's tables, then ``--set section.field=value`` overrides.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from hymba.config.scales import scale_names, scale_settings


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class Section:
    """Base of the configuration dataclasses: the checks every section uses, (de)serialisation."""

    SECTION: ClassVar[str]  # the TOML table / --set prefix, e.g. "train"

    def __post_init__(self) -> None:
        # NaN and inf never pass a range check by accident: every float field must be finite first
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if hints[f.name] is float and _is_number(v) and not math.isfinite(v):
                self.invalid(f.name, "must be a finite number")
        self.validate()

    def validate(self) -> None:
        """The section's own checks (ranges, choices, relations between fields); may normalise values."""

    # ---- checks: each raises ``section.name=value is invalid: what would be valid`` ----------------------
    def invalid(self, name: str, valid: str, value: Any = dataclasses.MISSING) -> NoReturn:
        value = getattr(self, name) if value is dataclasses.MISSING else value
        raise ValueError(f"{self.SECTION}.{name}={value!r} is invalid: {valid}")

    def check_ints(self, *names: str, low: int = 1, note: str = "") -> None:
        """Each field is an integer >= ``low``."""
        for name in names:
            v = getattr(self, name)
            if not _is_int(v) or v < low:
                self.invalid(
                    name, ("must be a positive integer" if low == 1 else f"must be an integer >= {low}") + note
                )

    def check_numbers(self, *names: str, low: float = 0, strict: bool = False, note: str = "") -> None:
        """Each field is a number > ``low`` (``strict``) or >= ``low``."""
        for name in names:
            v = getattr(self, name)
            if not _is_number(v) or v < low or (strict and v == low):
                self.invalid(name, f"must be {'>' if strict else '>='} {low:g}{note}")

    def check_interval(self, name: str, low: float, high: float, closed: str = "[]", note: str = "") -> None:
        """The field lies between ``low`` and ``high``; ``closed`` is the interval's brackets, e.g. ``"[)"``."""
        v = getattr(self, name)
        above = _is_number(v) and (low <= v if closed[0] == "[" else low < v)
        if not (above and (v <= high if closed[1] == "]" else v < high)):
            self.invalid(name, f"must lie in {closed[0]}{low:g}, {high:g}{closed[1]}{note}")

    def check_choice(self, name: str, choices: typing.Iterable[str], note: str = "") -> None:
        """The field is one of ``choices``."""
        choices = tuple(choices)
        if getattr(self, name) not in choices:
            self.invalid(name, f"expected one of {', '.join(choices)}{note}")

    # ---- (de)serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | None = None) -> typing.Self:
        """From a TOML table: unknown keys and wrong types are errors naming ``[where]`` (default: the section)
        and the key."""
        return section_from_dict(cls, d, where or cls.SECTION)

    def replace(self, **changes: Any) -> typing.Self:
        return dataclasses.replace(self, **changes)


# ---- reading TOML tables into sections ----------------------------------------------------------------
def _type_ok(value: Any, tp: Any) -> bool:
    """Whether a TOML value fits a (resolved) dataclass field annotation."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
        return not args or all(_type_ok(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return _is_int(value)
    if tp is float:
        return _is_number(value)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


def section_from_dict(cls: type, d: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a TOML table; unknown keys and wrongly typed values are errors naming
    ``[where]``, the key and (for types) the expected type."""
    if not isinstance(d, dict):
        raise ValueError(f"[{where}] must be a table, got {d!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"unknown key(s) in [{where}]: {', '.join(unknown)}; valid keys: {', '.join(names)}")
    for k, v in d.items():
        if not _type_ok(v, hints[k]):
            raise ValueError(f"[{where}] {k} = {v!r} has the wrong type: expected {_type_name(hints[k])}")
    values = {k: (float(v) if hints[k] is float else v) for k, v in d.items()}
    return cls(**values)


def parse_override(item: str) -> tuple[str, str, Any]:
    """``"section.field=value"`` -> (section, field, value). The value is read as TOML (``3``, ``1e-3``,
    ``true``, ``[0, 5]``, ``"x"``); anything that is not a TOML value is taken as a bare string, so paths
    and dataset names need no quotes."""
    key, sep, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ValueError(f"--set {item!r}: expected section.field=value, e.g. train.max_steps=100")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return section, name, value


def apply_overrides(
    tables: dict[str, dict[str, Any]], overrides: list[str] | tuple[str, ...], sections: dict[str, type]
) -> dict[str, dict[str, Any]]:
    """Apply ``--set section.field=value`` items to raw TOML tables (copies); unknown sections or fields are
    errors listing the valid ones. Types are checked when the sections are built."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in tables.items()}
    for item in overrides:
        section, name, value = parse_override(item)
        if section not in sections:
            raise ValueError(f"--set {item!r}: unknown section [{section}]; valid sections: {', '.join(sections)}")
        valid = [f.name for f in dataclasses.fields(sections[section])]
        if name not in valid:
            raise ValueError(f"--set {item!r}: unknown key {name!r} in [{section}]; valid keys: {', '.join(valid)}")
        hint = _hints(sections[section])[name]
        if isinstance(value, (int, float, bool)) and not _type_ok(value, hint) and _type_ok(str(value), hint):
            value = item.partition("=")[2].strip()  # e.g. data.source=2024 is a name, not a number
        out.setdefault(section, {})[name] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing file, non-UTF-8 text or bad TOML is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from e


def load_tables(
    path: str | Path | None,
    sections: dict[str, type],
    overrides: list[str] | tuple[str, ...] = (),
    *,
    scale: str | None = None,
    defaults: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The raw tables of ``sections``, each merged field by field from, lowest first: ``defaults``; the
    roadmap scale ``scale`` or the one the file names with a top-level ``scale = "<name>"`` (its tables for
    these sections; ``hymba.config.scales``); the file's tables; ``--set`` overrides. Unknown top-level tables
    and override keys are errors; keys and types of the file's tables are checked when the sections are built."""
    data = read_toml(path) if path is not None else {}
    if "scale" in data:
        scale = data.pop("scale")
        if not isinstance(scale, str) or scale not in scale_names():
            raise ValueError(
                f"{path}: scale = {scale!r} is not a scale of roadmap.toml; expected one of {', '.join(scale_names())}"
            )
    unknown = sorted(set(data) - set(sections))
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {', '.join(unknown)}; valid sections: {', '.join(sections)}")
    tables: dict[str, dict[str, Any]] = {name: {} for name in sections}
    layers = [defaults or {}, scale_settings(scale) if scale is not None else {}]
    for layer in layers:
        for name in sections:
            tables[name].update(layer.get(name, {}))
    for k, v in data.items():
        if not isinstance(v, dict):
            raise ValueError(f"{path}: [{k}] must be a table")
        tables[k].update(v)
    return apply_overrides(tables, overrides, sections)


def load_sections(
    path: str | Path | None,
    sections: dict[str, type],
    overrides: list[str] | tuple[str, ...] = (),
    defaults: dict[str, dict[str, Any]] | None = None,
    *,
    scale: str | None = None,
) -> dict[str, Any]:
    """Read a TOML file (or nothing) into dataclass sections, as :func:`load_tables` merges them; errors of a
    table name the file (or the scale) and the table."""
    tables = load_tables(path, sections, overrides, scale=scale, defaults=defaults)
    where = f"{path}: " if path is not None else f"scales.{scale}." if scale is not None else ""
    return {name: section_from_dict(cls, tables[name], where=f"{where}{name}") for name, cls in sections.items()}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def dump_sections(sections: dict[str, Any]) -> str:
    """TOML text for dataclass sections (fields that are ``None`` are left out: None is their default)."""
    lines: list[str] = []
    for name, obj in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in dataclasses.asdict(obj).items() if v is not None]
        lines.append("")
    return "\n".join(lines)


__all__ = [
    "Section",
    "apply_overrides",
    "dump_sections",
    "load_sections",
    "load_tables",
    "parse_override",
    "read_toml",
    "section_from_dict",
]
