"""Reading a search-space YAML file together with the line of every key (for error messages)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tuning.space._errors import KeyPath, Locator, SpaceError

__all__ = ["read_yaml"]


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-4``); ``lr: [1e-4, 1e-2]``
    would silently become two strings, the most common search-space typo.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: Path) -> tuple[Any, Locator]:
    """The document at ``path`` and a :class:`Locator` knowing each key's line.

    Duplicate keys are an error (PyYAML would keep the last one without a word).
    """
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpaceError(f"{source}: cannot read search space: {exc.strerror or exc}") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpaceError(f"{source}: the file is empty")
        lines: dict[KeyPath, int] = {}
        _record(node, (), lines, source)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise SpaceError(f"{source}{line}: invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise SpaceError(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, Locator(source, lines)


def _record(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # the schema check reports non-string keys
            key = str(key_node.value)
            here = (*path, key)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise Locator(source, {here: line}).error(
                    here, f"duplicate key (first on line {lines[here]}); keep one"
                )
            seen.add(key)
            lines[here] = line
            _record(value_node, here, lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _record(item, (*path, i), lines, source)
