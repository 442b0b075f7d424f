"""Sparsity patterns: small frozen value objects, each parsed from a string.

* :class:`Unstructured` (``"unstructured"``): every element is a unit.
* :class:`Block` (``"1x4"``, ``"4x4"``: height x width): blocks tiled from
  index 0 on the matrix view the norm mask uses (size-1 dims dropped, 0-D and
  1-D data one row, N-D data ``(shape[0], prod(shape[1:]))``); edge blocks are
  partial.
* :class:`NM` (``"2:4"``): ``n`` kept in every ``m`` consecutive weights along
  the input dim: dim 1 of a 2-D ``(out, in)`` weight, dim 1 of a conv weight
  ``(O, I, *k)`` viewed channels-last ``(O, *k, I)``, dim 0 of 1-D data. A unit
  is one group of ``m``.
* :class:`Channel` (``"channel"``): whole output rows, the ``shape[0]`` slices
  along dim 0 (0-D data is one unit).

Every pattern has ``units(shape)`` (how many selectable units a tensor of that
shape has; 0 for empty tensors) and ``check(shape, arg)``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from fsparse._src.checks import check_int, check_shape, short_repr

__all__ = ["NM", "Block", "Channel", "Pattern", "Unstructured", "matrix_shape", "parse_pattern"]


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The ``(rows, cols)`` matrix view of ``shape`` used by the block rule.

    >>> matrix_shape((8, 1, 3, 3)), matrix_shape((1, 5)), matrix_shape(())
    ((8, 9), (1, 5), (1, 1))
    """
    squeezed = [d for d in shape if d != 1]
    if len(squeezed) <= 1:
        return (1, squeezed[0] if squeezed else 1)
    return (squeezed[0], math.prod(squeezed[1:]))


@dataclass(frozen=True)
class Unstructured:
    """Every element is a unit."""

    def units(self, shape: tuple[int, ...]) -> int:
        """``prod(shape)``."""
        return math.prod(check_shape(shape, "shape"))

    def check(self, shape: tuple[int, ...], arg: str = "scores") -> None:
        """Any shape fits."""
        check_shape(shape, f"{arg}.shape")

    def __str__(self) -> str:
        return "unstructured"


@dataclass(frozen=True)
class Block:
    """``height x width`` blocks of the matrix view, ranked by mean score."""

    height: int
    width: int

    def __post_init__(self) -> None:
        check_int(self.height, "Block.height", low=1)
        check_int(self.width, "Block.width", low=1)

    def units(self, shape: tuple[int, ...]) -> int:
        """Number of (possibly partial) blocks tiling the matrix view."""
        shape = check_shape(shape, "shape")
        if math.prod(shape) == 0:
            return 0
        rows, cols = matrix_shape(shape)
        return -(-rows // self.height) * -(-cols // self.width)

    def check(self, shape: tuple[int, ...], arg: str = "scores") -> None:
        """Any shape fits (edge blocks are partial)."""
        check_shape(shape, f"{arg}.shape")

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"


@dataclass(frozen=True)
class NM:
    """``n`` kept in every ``m`` consecutive weights along the input dim."""

    n: int
    m: int

    def __post_init__(self) -> None:
        check_int(self.m, "NM.m", low=1)
        check_int(self.n, "NM.n", low=0, high=self.m)

    def input_dim(self, shape: tuple[int, ...]) -> int:
        """The dim the groups run along: 1 for 2-D and higher, else 0 (-1 for 0-D)."""
        return 1 if len(shape) >= 2 else len(shape) - 1

    def units(self, shape: tuple[int, ...]) -> int:
        """Number of groups of ``m``."""
        return math.prod(check_shape(shape, "shape")) // self.m

    def check(self, shape: tuple[int, ...], arg: str = "scores") -> None:
        """``ValueError`` unless the input dim is divisible by ``m``."""
        shape = check_shape(shape, f"{arg}.shape")
        dim = self.input_dim(shape)
        size = shape[dim] if shape else 1
        if size % self.m:
            raise ValueError(
                f"sparsity_type {self}: {arg} of shape {short_repr(shape)} has input dim "
                f"{max(dim, 0)} of size {size}, which is not divisible by {self.m}"
            )

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


@dataclass(frozen=True)
class Channel:
    """Whole output rows (dim-0 slices), ranked by mean score."""

    def units(self, shape: tuple[int, ...]) -> int:
        """``shape[0]`` (1 for 0-D, 0 for empty tensors)."""
        shape = check_shape(shape, "shape")
        if math.prod(shape) == 0:
            return 0
        return shape[0] if shape else 1

    def check(self, shape: tuple[int, ...], arg: str = "scores") -> None:
        """Any shape fits."""
        check_shape(shape, f"{arg}.shape")

    def __str__(self) -> str:
        return "channel"


Pattern = Unstructured | Block | NM | Channel
_PATTERN_TYPES = (Unstructured, Block, NM, Channel)
_BLOCK = re.compile(r"([1-9][0-9]{0,8})x([1-9][0-9]{0,8})")
_NM = re.compile(r"([0-9]{1,9}):([1-9][0-9]{0,8})")


def parse_pattern(pattern: Pattern | str, arg: str = "sparsity_type") -> Pattern:
    """``pattern`` itself, or the pattern its string names.

    >>> parse_pattern("2:4"), parse_pattern("1x4"), parse_pattern("channel")
    (NM(n=2, m=4), Block(height=1, width=4), Channel())
    """
    if isinstance(pattern, _PATTERN_TYPES):
        return pattern
    if not isinstance(pattern, str):
        raise TypeError(
            f"{arg} must be a pattern or its string ('unstructured', '2:4', '1x4', 'channel'), "
            f"got {type(pattern).__name__} {short_repr(pattern)}"
        )
    text = pattern.strip().lower()
    if text == "unstructured":
        return Unstructured()
    if text == "channel":
        return Channel()
    if match := _BLOCK.fullmatch(text):
        return Block(int(match[1]), int(match[2]))
    if (match := _NM.fullmatch(text)) and int(match[1]) <= int(match[2]):
        return NM(int(match[1]), int(match[2]))
    raise ValueError(
        f"{arg} must be 'unstructured', 'channel', 'HxW' (e.g. '1x4') or 'N:M' with N <= M "
        f"(e.g. '2:4'), got {short_repr(pattern)}"
    )
