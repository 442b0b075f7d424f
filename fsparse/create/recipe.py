"""A recipe: an immutable tuple of modifiers, with a YAML round trip.

YAML is read with :func:`fsparse._src.untrusted.safe_yaml_load` (plain data
only: no tags, no code, no anchors or aliases, bounded size and nesting) and
written with ``yaml.safe_dump``::

    version: 1
    modifiers:
    - type: GradualPruning
      start_epoch: 0.0
      ...
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fsparse._src.checks import short_repr
from fsparse._src.untrusted import MAX_YAML_BYTES, safe_yaml_load
from fsparse.create.modifiers import (
    ALL_PRUNABLE,
    MODIFIER_TYPES,
    PRUNING_TYPES,
    Distillation,
    EpochRange,
    LearningRateFunction,
    Modifier,
    Quantization,
    modifier_from_dict,
    modifier_to_dict,
)

__all__ = ["RECIPE_VERSION", "Recipe", "load_recipe"]

RECIPE_VERSION = 1
_SINGLETONS = (EpochRange, LearningRateFunction, Quantization, Distillation)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as err:  # pragma: no cover - pyyaml is in the recipes extra
        raise ImportError("recipes need PyYAML: pip install 'fsparse[recipes]'") from err
    return yaml


def _check_pruning_overlap(modifiers: Iterable[Modifier]) -> None:
    seen: set[str] = set()
    everything = False
    for modifier in modifiers:
        if not isinstance(modifier, PRUNING_TYPES):
            continue
        params = getattr(modifier, "params")  # noqa: B009 (every pruning modifier has params)
        names = {ALL_PRUNABLE} if params == ALL_PRUNABLE else set(params)
        if everything or (seen and ALL_PRUNABLE in names) or seen & names:
            raise ValueError(
                "pruning modifiers must act on disjoint params; "
                f"{type(modifier).__name__} overlaps an earlier one"
            )
        everything = ALL_PRUNABLE in names
        seen |= names


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Modifiers in order. At most one each of EpochRange, LearningRateFunction,
    Quantization and Distillation; pruning modifiers must not share params.

    >>> r = Recipe((EpochRange(0, 4), Distillation(0, 4)))
    >>> r.max_epochs, Recipe.from_yaml(r.to_yaml()) == r
    (4.0, True)
    """

    modifiers: tuple[Modifier, ...]

    def __post_init__(self) -> None:
        modifiers = tuple(self.modifiers) if isinstance(self.modifiers, (list, tuple)) else None
        if not modifiers:
            raise ValueError("a recipe needs at least one modifier, got none")
        for modifier in modifiers:
            if not isinstance(modifier, tuple(MODIFIER_TYPES.values())):
                raise TypeError(f"not a recipe modifier: {short_repr(modifier)}")
        for kind in _SINGLETONS:
            if sum(isinstance(m, kind) for m in modifiers) > 1:
                raise ValueError(f"a recipe may hold at most one {kind.__name__} modifier")
        _check_pruning_overlap(modifiers)
        object.__setattr__(self, "modifiers", modifiers)

    @property
    def max_epochs(self) -> float:
        """The latest end epoch of any modifier."""
        return max(m.end_epoch for m in self.modifiers)

    @property
    def min_epochs(self) -> float:
        """The earliest start epoch of any modifier."""
        return min(m.start_epoch for m in self.modifiers)

    def of_type(self, *kinds: type) -> tuple[Modifier, ...]:
        """The modifiers that are instances of ``kinds``, in order."""
        return tuple(m for m in self.modifiers if isinstance(m, kinds))

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"version": 1, "modifiers": [...]}``."""
        return {
            "version": RECIPE_VERSION,
            "modifiers": [modifier_to_dict(m) for m in self.modifiers],
        }

    def to_yaml(self) -> str:
        """YAML text of :meth:`to_dict`."""
        return str(_yaml().safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: object) -> Recipe:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on anything else."""
        if not isinstance(data, dict):
            hint = " (a recipe file path must end in .yaml or .yml)" * isinstance(data, str)
            raise ValueError(
                f"a recipe must be a mapping with 'modifiers', got {short_repr(data)}{hint}"
            )
        unknown = [key for key in data if key not in ("version", "modifiers")]
        if unknown:
            raise ValueError(
                f"recipe has unknown keys {short_repr(unknown, 200)}; "
                "known keys: version, modifiers"
            )
        version = data.get("version", RECIPE_VERSION)
        if type(version) not in (int, float) or version != RECIPE_VERSION:
            raise ValueError(f"recipe version must be {RECIPE_VERSION}, got {short_repr(version)}")
        modifiers = data.get("modifiers")
        if not isinstance(modifiers, list):
            raise ValueError(f"recipe 'modifiers' must be a list, got {short_repr(modifiers)}")
        return cls(tuple(modifier_from_dict(m) for m in modifiers))

    @classmethod
    def from_yaml(cls, text: str) -> Recipe:
        """Parse YAML text with :func:`~fsparse._src.untrusted.safe_yaml_load`: anchors,
        aliases, tags, deep nesting and texts over 1 MiB raise ``ValueError``."""
        _yaml()  # the install hint when PyYAML is missing
        return cls.from_dict(safe_yaml_load(text, "recipe"))

    def __str__(self) -> str:
        return self.to_yaml()


def load_recipe(recipe: Recipe | str | os.PathLike[str]) -> Recipe:
    """A :class:`Recipe` from itself, a YAML file path, or YAML text.

    >>> load_recipe("modifiers: [{type: EpochRange, start_epoch: 0, end_epoch: 1}]").max_epochs
    1.0
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, os.PathLike):
        return Recipe.from_yaml(_read(Path(recipe)))
    if not isinstance(recipe, str):
        raise TypeError(
            f"recipe must be a Recipe, a path or YAML text, got {type(recipe).__name__}"
        )
    if "\n" not in recipe and recipe.strip().endswith((".yaml", ".yml")):
        path = Path(recipe)
        if not path.is_file():
            raise ValueError(f"recipe file {short_repr(recipe, 200)} does not exist")
        return Recipe.from_yaml(_read(path))
    return Recipe.from_yaml(recipe)


def _read(path: Path) -> str:
    """The text of a recipe file, reading at most one byte past the YAML size limit."""
    try:
        with path.open("rb") as file:
            data = file.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise ValueError(f"cannot read recipe file {short_repr(str(path), 200)}: {err}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ValueError(
            f"recipe file {short_repr(str(path), 200)} is over {MAX_YAML_BYTES} bytes"
        )
    return data.decode("utf-8", errors="replace")
