"""Which layers of a model ``prune_model`` prunes: ``targets`` and ``ignore``, as globs."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

from torch import nn

from fsparse._src.checks import short_repr
from fsparse.oneshot._stats import layer_kind

__all__ = ["find_layers"]


def _patterns(value: object, arg: str) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable):
        raise TypeError(f"{arg} must be None, a str or an iterable of str (module names or "
                        f"globs), got {type(value).__name__} {short_repr(value)}")
    found = list(items)
    for item in found:
        if not isinstance(item, str):
            raise TypeError(f"{arg} must hold str module names or globs, got "
                            f"{type(item).__name__} {short_repr(item)}")
    return found


def find_layers(
    model: nn.Module, targets: object, ignore: object
) -> dict[str, tuple[nn.Module, str]]:
    """``{name: (module, kind)}`` of the layers to prune, in ``named_modules`` order.

    ``targets=None`` means every supported layer; a target pattern that matches
    no module, or matches an unsupported one, is an error. A layer whose weight
    another module also holds (tied weights, e.g. GPT-2's ``lm_head``) must be
    left out with ``ignore``.
    """
    wanted = _patterns(targets, "targets")
    skipped = _patterns(ignore, "ignore") or []
    modules = dict(model.named_modules())
    chosen: dict[str, tuple[nn.Module, str]] = {}
    if wanted is not None:
        for pattern in wanted:
            names = [n for n in modules if fnmatch.fnmatchcase(n, pattern)]
            if not names:
                raise ValueError(f"targets: {short_repr(pattern)} matches no module of the model")
            for name in names:
                kind = layer_kind(modules[name])
                if kind is None:
                    raise TypeError(
                        f"targets: module {short_repr(name)} is a {type(modules[name]).__name__}; "
                        "only nn.Linear, nn.Conv2d (groups=1) and transformers' Conv1D are pruned"
                    )
                chosen[name] = (modules[name], kind)
        chosen = {n: chosen[n] for n in modules if n in chosen}
    else:
        for name, module in modules.items():
            kind = layer_kind(module)
            if kind is not None:
                chosen[name] = (module, kind)
    chosen = {n: v for n, v in chosen.items()
              if not any(fnmatch.fnmatchcase(n, p) for p in skipped)}
    owners: dict[int, list[str]] = {}
    for name, module in modules.items():
        for param in module._parameters.values():
            if param is not None:
                owners.setdefault(id(param), []).append(name)
    for name, (module, _) in chosen.items():
        others = [o for o in owners.get(id(module.weight), []) if o != name]
        if others:
            raise ValueError(
                f"layer {short_repr(name)} shares its weight with {short_repr(others[0])} (tied "
                f"weights); leave it out with ignore=[{name!r}, ...] or untie the weights first"
            )
    if not chosen:
        raise ValueError("no layer to prune: the model has no nn.Linear, nn.Conv2d or Conv1D "
                         "layer left by targets and ignore")
    return chosen
