"""Differential tests of the chunked path's unit kernels: flag words, rank writes, sums.

Each fast kernel is checked against a plain reference (``count_nonzero``,
``nonzero``, a stable sort, the reference norm mask) on data with ties, ``-0.0``,
zeros, edge blocks, tiny (subnormal-mean) values and every score dtype.
"""

from __future__ import annotations

import pytest
import torch

import fsparse
from fsparse._src.engine import chunked_mask
from fsparse._src.engine import threshold as threshold_mod
from fsparse._src.engine.block_plan import BlockPlan
from fsparse._src.engine.block_write import RankScratch, spread, write_ranked, write_sorted
from fsparse._src.engine.chunked_mask import large_norm_mask
from fsparse._src.engine.norm_mask import reference_norm_mask
from fsparse._src.engine.unit_flags import count_true, padded_length, true_positions

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def test_count_true_over_any_length_and_offset() -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(70_000, generator=gen) < 0.3
    for start in (0, 1, 3, 7, 8, 13):
        for length in (0, 1, 5, 8, 9, 63, 64, 511, 2040, 2041, 16_385, 69_000 - start):
            flags = base[start : start + length]
            assert count_true(flags) == int(torch.count_nonzero(flags))
    assert count_true(torch.ones(255 * 64 * 8 + 3, dtype=torch.bool)) == 255 * 64 * 8 + 3
    assert count_true(torch.ones(3, 5, dtype=torch.bool)) == 15


def test_true_positions_match_nonzero() -> None:
    gen = torch.Generator().manual_seed(1)
    for n, density in ((8, 0.5), (64, 0.0), (1000, 0.01), (4096, 0.9), (40_000, 0.02)):
        flags = torch.zeros(padded_length(n), dtype=torch.bool)
        flags[:n] = torch.rand(n, generator=gen) < density
        assert torch.equal(true_positions(flags), flags.nonzero().squeeze(1))


def _blocks(shape: tuple[int, int, int, int], ties: bool, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if ties:
        return torch.randint(0, 3, shape, generator=gen).float()
    return torch.randn(shape, generator=gen).abs()


@pytest.mark.parametrize("ties", [False, True])
def test_ranked_writes_match_a_stable_sort(ties: bool) -> None:
    # One scratch serves every shape in turn, as the regions of one plan share it:
    # lanes a distance leaves alone must stay zero across shapes.
    scratch = RankScratch(4096, torch.device("cpu"))
    seed = 0
    for a, h, b, w in [(7, 1, 5, 4), (3, 1, 9, 4), (5, 2, 3, 2), (4, 1, 6, 8), (2, 3, 4, 3),
                       (6, 1, 7, 1), (3, 2, 2, 4), (5, 1, 3, 2), (1, 4, 4, 4)]:  # fmt: skip
        for zeros in range(1, h * w):
            seed += 1
            blocks = _blocks((a, h, b, w), ties, seed)
            keep = torch.rand(a, b, generator=torch.Generator().manual_seed(seed)) < 0.3
            expected = torch.empty(a, h, b, w, dtype=torch.bool)
            write_sorted(expected, blocks, keep, zeros)
            got = torch.empty(a, h, b, w, dtype=torch.bool)
            write_ranked(got, blocks, keep, zeros, scratch)
            assert torch.equal(got, expected), (a, h, b, w, zeros)
            # a strided target (no whole words): the byte-wise path
            wide = torch.zeros(a, h, b, w + 1, dtype=torch.bool)
            write_ranked(wide[..., :w], blocks, keep, zeros, scratch)
            assert torch.equal(wide[..., :w], expected) and not wide[..., w].any()


def test_spread_writes_whole_blocks() -> None:
    keep = torch.tensor([[True, False, True], [False, False, True]])
    for h, w in [(1, 4), (2, 2), (1, 1), (3, 1), (1, 8), (2, 3)]:
        out = torch.empty(2, h, 3, w, dtype=torch.bool)
        spread(out, keep)
        assert torch.equal(out, keep[:, None, :, None].expand(2, h, 3, w))


def _awkward(shape: tuple[int, int], dtype: torch.dtype, kind: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == 0:  # ties, zeros and -0.0
        data = torch.randint(-2, 3, shape, generator=gen).double()
        data[data == 0] = torch.tensor(-0.0, dtype=torch.float64)
        data[::3] = 0.0
    elif kind == 1:  # the smallest subnormals: block means round when divided
        wide = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        step = torch.finfo(wide).tiny * torch.finfo(wide).eps  # 2**-149 or 2**-1074
        data = torch.randint(0, 9, shape, generator=gen).to(wide) * step
        return data.to(dtype)
    else:
        data = torch.randn(shape, generator=gen, dtype=torch.float64)
    return data.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bracket_pass_units_match_the_reference(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small sample sends small matrices through the sampled bracket pass: block sums
    # against scaled bounds, candidates found by words, rank writes, unchosen refills.
    monkeypatch.setattr(chunked_mask, "sample_size", lambda n: 64)
    monkeypatch.setattr(threshold_mod, "_Z_SCORE", 0.3)  # a narrow bracket: it often holds
    passes: list[bool] = []
    bracket_pass = chunked_mask._bracket_pass

    def counted(*args: object) -> bool:
        passes.append(bracket_pass(*args))  # type: ignore[arg-type]
        return passes[-1]

    monkeypatch.setattr(chunked_mask, "_bracket_pass", counted)
    scaled: list[int] = []
    original = BlockPlan.sum_scale

    def spy(self: BlockPlan, unit: object) -> int:
        scaled.append(original(self, unit))  # type: ignore[arg-type]
        return scaled[-1]

    monkeypatch.setattr(BlockPlan, "sum_scale", spy)
    trial = 0
    for block in [(1, 4), (1, 1), (2, 2), (1, 2), (1, 8), (2, 8), (3, 3), (4, 4), (1, 3)]:
        area = block[0] * block[1]
        for zeros in sorted({1, min(2, area), max(1, area // 2), area}):
            for shape in [(48, 64), (37, 29)]:  # whole blocks; edge blocks
                trial += 1
                kind = trial % 3
                data = _awkward(shape, dtype, kind, trial)
                config = fsparse.make_config(
                    sparsity_level=[0.5, 0.3, 0.8, 0.6][trial % 4],
                    sparse_block_shape=block,
                    zeros_per_block=zeros,
                    norm=["L1", "L2"][trial % 2],
                )
                expected = reference_norm_mask(data, config)
                got = large_norm_mask(data, config, chunk_elements=[256, 600, 97][trial % 3])
                assert torch.equal(got, expected), (block, zeros, shape, kind)
    assert sum(passes) > 10  # the bracket pass really ran and held
    assert any(s > 1 for s in scaled) and 1 in scaled  # sums and means both compared


@pytest.mark.parametrize("bound", [0.0, float("inf"), float("-inf"), 1e-45, 1e-38, 3e38])
def test_scaled_bounds_are_exact_or_refused(bound: float) -> None:
    scaled = chunked_mask._scaled(bound, 4, torch.float32)
    if bound in (0.0, float("inf"), float("-inf")):
        assert scaled == bound
    elif bound <= torch.finfo(torch.float32).tiny:
        assert scaled is None  # a subnormal mean may round: divide instead
    else:
        assert scaled == float(torch.tensor(bound) * 4)  # 3e38 * 4 is inf in float32


@pytest.mark.parametrize("block,zeros", [((1, 4), 4), ((1, 4), 2), ((1, 1), 1), ((2, 2), 3)])
def test_real_sized_bracket_pass_matches_the_reference(block: tuple[int, int], zeros: int) -> None:
    # More blocks than the real sample size: the sampled bracket runs as in production.
    gen = torch.Generator().manual_seed(3)
    data = torch.randn(520, 1030, generator=gen)
    data[::7] = data[::7].round()  # ties among the block means
    config = fsparse.make_config(sparse_block_shape=block, zeros_per_block=zeros)
    got = large_norm_mask(data, config, 1 << 17)  # several units
    assert torch.equal(got, reference_norm_mask(data, config))
