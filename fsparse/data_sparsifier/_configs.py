"""Each entry's core config, parsed from torch.ao's ``data_groups`` view when it changed.

A step reads every group; parsing one (:func:`fsparse.make_config`) costs far more
than comparing it with the group it was parsed from, so unchanged groups reuse their
config and a step stays cheap per entry.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from fsparse._src.checks import short_repr
from fsparse._src.config import SparsityConfig

__all__ = ["parse_groups"]

_PLAIN = (int, float, str, bool, type(None))
Cache = dict[str, tuple[dict[str, Any], SparsityConfig]]


def _same(a: Any, b: Any) -> bool:
    """Whether a config value is unchanged (plain values by value, objects by identity)."""
    if isinstance(a, _PLAIN) or isinstance(b, _PLAIN):
        return type(a) is type(b) and a == b
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a is b


def _same_group(cached: Mapping[str, Any], group: Mapping[str, Any]) -> bool:
    return cached.keys() == group.keys() and all(_same(cached[k], group[k]) for k in cached)


def parse_groups(
    groups: Mapping[str, Any],
    cache: Cache,
    config_from_group: Callable[[Mapping[str, Any]], SparsityConfig],
    *,
    names: Collection[str],
) -> dict[str, SparsityConfig]:
    """``{name: config}`` of every group; ``cache`` keeps each group's copy and config.

    Raises ``ValueError`` unless the groups are exactly ``names``, and
    ``TypeError``/``ValueError`` naming the group for a bad one.
    """
    if len(groups) != len(names) or any(n not in names for n in groups):
        unknown = [n for n in groups if n not in names]
        lost = [n for n in names if n not in groups]
        raise ValueError(
            f"data_groups must hold exactly the data names: unknown {short_repr(unknown)}, "
            f"missing {short_repr(lost)}"
        )
    configs = {}
    for name, group in groups.items():
        if not isinstance(group, Mapping):
            raise TypeError(f"data_groups[{name!r}] must be a dict, got {short_repr(group)}")
        cached = cache.get(name)
        if cached is None or not _same_group(cached[0], group):
            try:
                config = config_from_group(group)
            except (TypeError, ValueError) as err:
                raise type(err)(f"data_groups[{name!r}]: {err}") from None
            cached = (dict(group), config)
            cache[name] = cached
        configs[name] = cached[1]
    return configs
