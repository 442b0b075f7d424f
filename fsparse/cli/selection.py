"""Which tensors ``fsparse sparsify`` touches, and with which config.

Matching rules (the ones ``fsparse sparsify --help`` documents):

* Patterns are shell globs (``fnmatch.fnmatchcase``: case-sensitive; ``*``
  matches any run of characters, dots included; ``?`` one character; ``[abc]``
  a set) matched against the whole state-dict key, e.g. ``emb.*`` or ``*.weight``.
* Only floating-point tensors are ever sparsified; every other entry (integer
  buffers, ``num_batches_tracked``, non-tensors) is passed through untouched.
* A floating-point tensor is *selected* if it matches an ``--include`` pattern
  (with no ``--include`` given: every tensor) or a ``--per-tensor`` pattern; it
  is sparsified if selected and it matches no ``--exclude`` pattern.
* The 2+ dims rule: a tensor with fewer than 2 dimensions (biases, norm scales)
  is selected only when a pattern names it exactly (``fc.bias``) or with
  ``allow_1d`` (``--allow-1d``); one that a glob matched is listed in
  :attr:`Selection.below_2d`, so the summary can say it was left dense.
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

from fsparse._src.checks import short_repr
from fsparse._src.config import SparsityConfig, make_config
from fsparse._src.untrusted import MAX_YAML_BYTES, safe_yaml_load

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
        raise ValueError(f"{what} must look like 1x4 (HxW, positive ints), got {short_repr(text)}")
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
    raise ValueError(f"{where} must be 'HxW' or [H, W] with positive ints, got {short_repr(value)}")


def _bounded(err: BaseException, limit: int = 200) -> str:
    """An error's message cut to ``limit`` characters (a file's values can be huge)."""
    text = str(err)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``, read through the one untrusted-YAML loader."""
    what = f"--per-tensor {path}"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)  # never more than the loader accepts
    except OSError as err:
        raise ValueError(f"{what}: {err.strerror or err}") from err
    text = raw.decode("utf-8", errors="replace")
    try:
        return safe_yaml_load(text, what)
    except ValueError as err:
        import yaml

        cause = err.__context__  # the parser's own error: say where, in one short line
        if not isinstance(cause, yaml.YAMLError):
            if str(err).startswith(what):
                raise
            # a value the YAML constructor could not build (e.g. an int of 50,000 digits)
            raise ValueError(f"{what}: not valid YAML ({str(err)[:100]})") from None
        mark = getattr(cause, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = str(getattr(cause, "problem", None) or type(cause).__name__)[:100]
        raise ValueError(f"{what}: not valid YAML{where} ({problem})") from None


def load_per_tensor(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """Read a ``--per-tensor`` YAML file: a mapping ``pattern -> {config key: value}``.

    Keys: ``sparsity_level``, ``sparse_block_shape`` (or ``block``; ``1x4`` or
    ``[1, 4]``), ``zeros_per_block`` (at least 1), ``norm``. Returns ``(pattern,
    overrides)`` in file order; raises ``ValueError`` with a one-line, bounded
    message for bad files. The file is parsed by
    :func:`fsparse._src.untrusted.safe_yaml_load`: no anchors or aliases, bounded
    size and nesting.
    """
    try:
        import yaml  # noqa: F401  (the optional extra safe_yaml_load needs)
    except ImportError as err:
        raise ValueError("--per-tensor needs PyYAML: pip install 'fsparse[recipes]'") from err

    path = Path(path)
    doc = _read_yaml(path)
    if not isinstance(doc, Mapping) or not doc:
        raise ValueError(
            f"--per-tensor {path}: expected a mapping of name patterns to configs, "
            f"got {type(doc).__name__}"
        )
    rules: list[tuple[str, dict[str, Any]]] = []
    for pattern, overrides in doc.items():
        where = f"--per-tensor {path}: {short_repr(pattern)}"
        if not isinstance(pattern, str) or not isinstance(overrides, Mapping):
            raise ValueError(f"{where}: each entry must be 'pattern: {{key: value}}'")
        unknown = sorted(short_repr(k) for k in overrides if k not in PER_TENSOR_KEYS)
        if unknown:
            raise ValueError(
                f"{where}: unknown keys [{', '.join(unknown[:5])}"
                f"{', ...' if len(unknown) > 5 else ''}]; known: {sorted(PER_TENSOR_KEYS)}"
            )
        clean = dict(overrides)
        for key in ("block", "sparse_block_shape"):
            if key in clean:
                clean["sparse_block_shape"] = _block_value(clean.pop(key), f"{where} {key}")
        zeros = clean.get("zeros_per_block")
        if isinstance(zeros, int) and not isinstance(zeros, bool) and zeros == 0:
            raise ValueError(f"{where}: zeros_per_block must be at least 1 (0 zeros nothing)")
        try:
            level = make_config(**clean).sparsity_level
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {_bounded(err)}") from err
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"{where}: sparsity_level must be in [0, 1], got {short_repr(level)}")
        rules.append((pattern, clean))
    return rules


@dataclasses.dataclass(frozen=True)
class Selection:
    """Configs of the tensors to sparsify, in state-dict order; the rest pass through.

    ``below_2d`` names the passed-through tensors with fewer than 2 dims that a
    glob matched but the 2+ dims rule kept out.
    """

    configs: dict[str, SparsityConfig]
    passed_through: tuple[str, ...]
    below_2d: tuple[str, ...] = ()


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _check_used(patterns: Iterable[str], names: Sequence[str], option: str) -> None:
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            sample = ", ".join(short_repr(n) for n in names[:3]) + (
                ", ..." if len(names) > 3 else ""
            )
            raise ValueError(
                f"{option} pattern {short_repr(pattern)} matches no tensor "
                f"(keys look like: {sample})"
            )


def select(
    tensors: Mapping[str, torch.Tensor],
    base: SparsityConfig,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    per_tensor: Sequence[tuple[str, Mapping[str, Any]]] = (),
    *,
    allow_1d: bool = False,
) -> Selection:
    """Apply the module's matching rules to ``tensors`` (name -> tensor).

    >>> t = {"fc.weight": torch.ones(4, 4), "fc.bias": torch.ones(4), "emb.w": torch.ones(8, 4)}
    >>> list(select(t, make_config(), exclude=["emb.*"]).configs)
    ['fc.weight']
    >>> chosen = select(t, make_config(), include=["fc.*"])
    >>> list(chosen.configs), chosen.below_2d
    (['fc.weight'], ('fc.bias',))
    >>> list(select(t, make_config(), include=["fc.*", "fc.bias"]).configs)
    ['fc.weight', 'fc.bias']
    """
    names = list(tensors)
    _check_used(include, names, "--include")
    _check_used(exclude, names, "--exclude")
    _check_used([p for p, _ in per_tensor], names, "--per-tensor")
    patterns = set(include) | {p for p, _ in per_tensor}
    configs: dict[str, SparsityConfig] = {}
    below_2d: list[str] = []
    for name, tensor in tensors.items():
        if not tensor.is_floating_point() or _matches(name, exclude):
            continue
        rules = [
            overrides for pattern, overrides in per_tensor if fnmatch.fnmatchcase(name, pattern)
        ]
        wanted = _matches(name, include) if include else tensor.dim() >= 2
        if not (wanted or rules):
            continue
        if tensor.dim() < 2 and not allow_1d and name not in patterns:
            below_2d.append(name)  # a glob matched it: the 2+ dims rule keeps it out
            continue
        config = base
        try:
            for overrides in rules:
                config = make_config(config, **overrides)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"--per-tensor config for {short_repr(name)}: {_bounded(err)}"
            ) from err
        configs[name] = config
    if not configs:
        kept_out = (
            f"; {len(below_2d)} tensors with fewer than 2 dims matched a glob "
            "(name them exactly or pass --allow-1d)"
            if below_2d
            else ""
        )
        raise ValueError(
            "no tensor selected: nothing is floating-point, matched by --include/--per-tensor "
            f"(default: 2-D or more) and not excluded by --exclude{kept_out}"
        )
    passed = tuple(n for n in names if n not in configs)
    return Selection(configs, passed, tuple(below_2d))
