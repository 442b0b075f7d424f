"""Which tensors ``fsparse sparsify`` touches, and with which config.

Matching rules (the ones ``fsparse sparsify --help`` documents):

* Patterns are shell globs (``fnmatch.fnmatchcase``: case-sensitive; ``*``
  matches any run of characters, dots included; ``?`` one character; ``[abc]``
  a set) matched against the whole state-dict key, e.g. ``emb.*`` or ``*.weight``.
* Only floating-point tensors are ever sparsified; every other entry (integer
  buffers, ``num_batches_tracked``, non-tensors) is passed through untouched.
* A floating-point tensor is *selected* if it matches an ``--include`` pattern
  (with no ``--include`` given: if it has at least 2 dimensions, so biases and
  norm scales are skipped) or a ``--per-tensor`` pattern; it is sparsified if
  selected and it matches no ``--exclude`` pattern.
* Every pattern must match at least one key, or the run stops with an error.
* ``--per-tensor`` overrides from every matching pattern apply in file order,
  so later (more specific) entries win key by key.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fsparse._src.config import SparsityConfig, make_config

__all__ = ["PER_TENSOR_KEYS", "Selection", "load_per_tensor", "parse_block", "select"]

PER_TENSOR_KEYS: frozenset[str] = frozenset(
    {"sparsity_level", "sparse_block_shape", "block", "zeros_per_block", "norm"}
)
_BLOCK = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_block(text: str, what: str = "--block") -> tuple[int, int]:
    """``"1x4"`` -> ``(1, 4)``; a ``ValueError`` naming ``what`` for anything else.

    >>> parse_block("2x2")
    (2, 2)
    """
    match = _BLOCK.match(text) if isinstance(text, str) else None
    if match is None or int(match[1]) <= 0 or int(match[2]) <= 0:
        raise ValueError(f"{what} must look like 1x4 (HxW, positive ints), got {text!r}")
    return int(match[1]), int(match[2])


def _block_value(value: object, where: str) -> tuple[int, int]:
    if isinstance(value, str):
        return parse_block(value, where)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(f"{where} must be 'HxW' or [H, W] with positive ints, got {value!r}")


def load_per_tensor(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """Read a ``--per-tensor`` YAML file: a mapping ``pattern -> {config key: value}``.

    Keys: ``sparsity_level``, ``sparse_block_shape`` (or ``block``; ``1x4`` or
    ``[1, 4]``), ``zeros_per_block``, ``norm``. Returns ``(pattern, overrides)``
    in file order; raises ``ValueError`` with a one-line message for bad files.
    """
    try:
        import yaml
    except ImportError as err:
        raise ValueError("--per-tensor needs PyYAML: pip install 'fsparse[recipes]'") from err

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"--per-tensor {path}: {err.strerror or err}") from err
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ValueError(f"--per-tensor {path}: not valid YAML{where} ({problem})") from err
    if not isinstance(doc, Mapping) or not doc:
        raise ValueError(
            f"--per-tensor {path}: expected a mapping of name patterns to configs, "
            f"got {type(doc).__name__}"
        )
    rules: list[tuple[str, dict[str, Any]]] = []
    for pattern, overrides in doc.items():
        where = f"--per-tensor {path}: {pattern!r}"
        if not isinstance(pattern, str) or not isinstance(overrides, Mapping):
            raise ValueError(f"{where}: each entry must be 'pattern: {{key: value}}'")
        unknown = sorted(set(map(str, overrides)) - PER_TENSOR_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(PER_TENSOR_KEYS)}")
        clean = dict(overrides)
        for key in ("block", "sparse_block_shape"):
            if key in clean:
                clean["sparse_block_shape"] = _block_value(clean.pop(key), f"{where} {key}")
        try:
            level = make_config(**clean).sparsity_level
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"{where}: sparsity_level must be in [0, 1], got {level!r}")
        rules.append((pattern, clean))
    return rules


@dataclasses.dataclass(frozen=True)
class Selection:
    """Configs of the tensors to sparsify, in state-dict order; the rest pass through."""

    configs: dict[str, SparsityConfig]
    passed_through: tuple[str, ...]


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _check_used(patterns: Iterable[str], names: Sequence[str], option: str) -> None:
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            sample = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise ValueError(
                f"{option} pattern {pattern!r} matches no tensor (keys look like: {sample})"
            )


def select(
    tensors: Mapping[str, torch.Tensor],
    base: SparsityConfig,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    per_tensor: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> Selection:
    """Apply the module's matching rules to ``tensors`` (name -> tensor).

    >>> t = {"fc.weight": torch.ones(4, 4), "fc.bias": torch.ones(4), "emb.w": torch.ones(8, 4)}
    >>> list(select(t, make_config(), exclude=["emb.*"]).configs)
    ['fc.weight']
    """
    names = list(tensors)
    _check_used(include, names, "--include")
    _check_used(exclude, names, "--exclude")
    _check_used([p for p, _ in per_tensor], names, "--per-tensor")
    configs: dict[str, SparsityConfig] = {}
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            continue
        rules = [
            overrides for pattern, overrides in per_tensor if fnmatch.fnmatchcase(name, pattern)
        ]
        wanted = _matches(name, include) if include else tensor.dim() >= 2
        if not (wanted or rules) or _matches(name, exclude):
            continue
        config = base
        try:
            for overrides in rules:
                config = make_config(config, **overrides)
        except (TypeError, ValueError) as err:
            raise ValueError(f"--per-tensor config for {name!r}: {err}") from err
        configs[name] = config
    if not configs:
        raise ValueError(
            "no tensor selected: nothing is floating-point, matched by --include/--per-tensor "
            "(default: 2-D or more) and not excluded by --exclude"
        )
    passed = tuple(n for n in names if n not in configs)
    return Selection(configs, passed)
