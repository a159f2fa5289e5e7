"""Where pipeline settings come from besides the command line: YAML files and
``PTYFLOW__SECTION__FIELD=value`` environment variables, and the error that names the
source of a bad one. Plain mappings only (no pydantic models): :mod:`flows.params`
validates what these return."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "load_yaml", "env_overrides", "env_variables", "nested", "sets",
           "deep_merge"]


class ConfigError(ValueError):
    """A configuration file or parameter set that cannot be used."""


def load_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping: the one reader of every YAML file in :mod:`flows`.

    Raises
    ------
    ConfigError
        Naming the file: missing, unreadable, not valid YAML (with the line and column
        where YAML gives them), or a top level that is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: configuration file not found")
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{p}: line {mark.line + 1}, column {mark.column + 1}" if mark else str(p)
        raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(exc)}") from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: top level must be a mapping of parameters")
    return doc


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """What YAML found wrong, without its quote of the text (``<unicode string>``)."""
    return "; ".join(m for m in (exc.context, exc.problem) if m) or type(exc).__name__


def env_overrides(prefix: str = "PTYFLOW__") -> dict:
    """Nested mapping from ``PTYFLOW__SECTION__FIELD=value`` variables (YAML-parsed).

    Raises
    ------
    ConfigError
        Naming the variable: a value that is not valid YAML, a name with no field after
        the prefix, or one inside a field another variable sets to a plain value.
    """
    return nested(env_variables(prefix))


def env_variables(prefix: str = "PTYFLOW__") -> list[tuple[str, tuple[str, ...], Any]]:
    """``(variable, field path, YAML-parsed value)`` of each ``PTYFLOW__`` variable, the
    longest paths first (the order :func:`nested` applies them in reverse)."""
    out = []
    for key, value in os.environ.items():
        if not key.startswith(prefix):
            continue
        path = tuple(p.lower() for p in key[len(prefix) :].split("__") if p)
        if not path:
            raise ConfigError(f"{key}: names no parameter; use {prefix}SECTION__FIELD=value, "
                              f"e.g. {prefix}ENGINE__EPOCHS=20")  # fmt: skip
        try:
            out.append((key, path, yaml.safe_load(value)))
        except yaml.MarkedYAMLError as exc:
            raise ConfigError(f"{key}: not valid YAML: {_yaml_problem(exc)}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: not valid YAML: {exc}") from None
    return sorted(out, key=lambda v: -len(v[1]))


def nested(variables: list[tuple[str, tuple[str, ...], Any]]) -> dict:
    """The nested mapping the ``(variable, path, value)`` entries set, shorter paths
    first (a variable for a whole section, then those for its fields)."""
    out: dict = {}
    for var, path, value in reversed(variables):
        node = out
        for i, p in enumerate(path[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{var}: {'.'.join(path[: i + 1])} is set to a plain value "
                                  "by another PTYFLOW__ variable")  # fmt: skip
        node[path[-1]] = copy.deepcopy(value)  # a section's mapping: not shared
    return out


def sets(tree: dict, loc: tuple[str, ...]) -> bool:
    """Whether the nested mapping ``tree`` gives the value at ``loc`` (or one above it)."""
    node: Any = tree
    for p in loc:
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
        if not isinstance(node, dict):
            return True
    return False


def has_path(tree: dict, loc: tuple[str, ...]) -> bool:
    """Whether the nested mapping ``tree`` holds the key path ``loc`` itself (a whole
    section too): the layer an unknown key came from."""
    node: Any = tree
    for p in loc:
        if not isinstance(node, dict) or p not in node:
            return False
        node = node[p]
    return bool(loc)


def deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out
