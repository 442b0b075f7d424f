"""The benchmark cases. Each phase of a case runs in a fresh worker process.

The ``time`` phase times fsparse and torch.ao on the same data and compares
their masks; the ``memory`` phase, in a process started with glibc's mmap
threshold fixed (see ``measure``), measures the peak extra memory of one step
of each on the same data. Workers print ``RESULT {json}`` lines as they go,
fsparse's before torch.ao's, so a torch.ao run that dies (out of memory) still
leaves fsparse's figures.
"""

from __future__ import annotations

import copy
import io
import json
import math
import warnings
from typing import Any

import torch
from measure import available_bytes, best_time, limit_address_space, peak_extra, tie_free
from torch import nn
from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier
from torch.ao.pruning.sparsifier.utils import FakeSparsity
from torch.func import functional_call
from torch.nn.utils import parametrize

import fsparse

BLOCK_CASES: dict[str, dict[str, Any]] = {
    "1": {"block": (1, 4), "zeros": 4},
    "2": {"block": (1, 4), "zeros": 2},
    "3": {"block": (1, 1), "zeros": 1},
    "4": {"block": (4, 4), "zeros": 16},
}
DLRM_ROWS = [
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
]  # fmt: skip
LEVEL = 0.5


def emit(kind: str, **fields: Any) -> None:
    print("RESULT " + json.dumps({"kind": kind, **fields}), flush=True)


def _ao_sparsifier(data: dict[str, torch.Tensor], **config: Any) -> DataNormSparsifier:
    sparsifier = DataNormSparsifier(**config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, tensor in data.items():
            sparsifier.add_data(name, tensor)
    return sparsifier


def _compare(
    data: torch.Tensor, ours: torch.Tensor, theirs: torch.Tensor, block: tuple[int, int],
    zeros: int,
) -> dict[str, Any]:
    """Whether two masks agree, and if not, whether every differing block is a tie.

    A differing block is explained by ties when its mean equals the k-th
    smallest mean (torch.ao's unstable sort may order equal means either way)
    or when its scores repeat inside the block (for ``zeros < block size``).
    """
    diff = ours != theirs
    n_diff = int(diff.sum())
    if n_diff == 0:
        return {"identical": True, "diff_elements": 0, "ties_only": True}
    matrix = data.reshape(data.shape[0], -1) if data.dim() > 1 else data.reshape(1, -1)
    scores = matrix.abs().float()
    means = fsparse.block_means(scores, block)
    k = round(LEVEL * means.numel())
    threshold = means.reshape(-1).kthvalue(k).values
    bh, bw = block
    h, w = scores.shape
    padded = torch.zeros(-(-h // bh) * bh, -(-w // bw) * bw, dtype=torch.bool)
    padded[:h, :w] = diff.reshape(h, w)
    blocks = padded.view(padded.shape[0] // bh, bh, -1, bw).any(3).any(1).nonzero()
    explained = 0
    for i, j in blocks.tolist():
        cell = scores[i * bh : (i + 1) * bh, j * bw : (j + 1) * bw].reshape(-1)
        tie_at_threshold = bool(means[i, j] == threshold)
        repeats = zeros < bh * bw and cell.unique().numel() < cell.numel()
        explained += int(tie_at_threshold or repeats)
    return {
        "identical": False,
        "diff_elements": n_diff,
        "diff_blocks": int(blocks.shape[0]),
        "ties_only": explained == blocks.shape[0],
    }


def memory_phase(data: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Peak extra memory of one fsparse step, then of one torch.ao step, on ``data``.

    Each library first steps once on a small slice of the data, so that one-time
    process costs (code pages, thread pools) are not counted as the step's.
    """
    warm = {name: t[: 1 << 15].clone() for name, t in list(data.items())[:2]}
    fsparse.step(fsparse.init(warm, **config))
    _fsparse_peak(data, config)
    try:
        _ao_sparsifier(warm, **config).step()
        sparsifier = _ao_sparsifier(data, **config)
        _, _, extra = peak_extra(sparsifier.step)
    except (RuntimeError, MemoryError) as err:
        emit("torch.ao", skipped=f"out of memory: {str(err).splitlines()[0][:120]}")
        return
    emit("torch.ao", peak_extra=extra)


def _fsparse_peak(data: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    state = fsparse.init(data, **config)
    _, _, extra = peak_extra(lambda: fsparse.step(state))
    emit("fsparse", peak_extra=extra)


def block_case(case: str, scale: float, repeats: int, ao_repeats: int, phase: str) -> None:
    spec = BLOCK_CASES[case]
    block, zeros = spec["block"], spec["zeros"]
    rows = max(4, round(1_000_000 * scale) // 4 * 4)
    x = torch.randn(rows, 64, generator=torch.Generator().manual_seed(int(case)))
    config = {"sparsity_level": LEVEL, "sparse_block_shape": block, "zeros_per_block": zeros}
    if phase == "memory":
        memory_phase({"w": x}, config)
        return
    emit("data", shape=[rows, 64], bytes=x.nbytes)
    emit("read", seconds=best_time(lambda: x.abs().sum(), repeats))
    state = fsparse.init({"w": x}, **config)
    stepped = fsparse.step(state)
    emit("fsparse", seconds=best_time(lambda: fsparse.step(state), repeats))
    sparsifier = _ao_sparsifier({"w": x}, **config)
    seconds = best_time(sparsifier.step, ao_repeats)
    theirs = sparsifier.get_mask("w").bool()
    emit("torch.ao", seconds=seconds, **_compare(x, stepped["w"].mask, theirs, block, zeros))
    if case == "1":
        storage(stepped, sparsifier, repeats)
    del sparsifier, theirs
    clean = tie_free(rows, 64, block, seed=int(case))
    ours = fsparse.norm_mask(clean, LEVEL, block, zeros)
    reference = _ao_sparsifier({"w": clean}, **config)
    reference.step()
    emit("tie_free", **_compare(clean, ours, reference.get_mask("w").bool(), block, zeros))


def storage(state: fsparse.SparsifierState, sparsifier: DataNormSparsifier, repeats: int) -> None:
    """Mask sizes: bool in memory, fsparse bit-packed, torch.ao sparse COO; and saved files."""
    mask = state["w"].mask
    packed = fsparse.masks_state_dict(state)
    coo = sparsifier.state_dict()["state"]["w"]["mask"]

    def saved(obj: Any) -> int:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.tell()

    buffer = io.BytesIO()
    torch.save(packed, buffer)
    buffer.seek(0)
    restored = fsparse.load_masks(state, torch.load(buffer, weights_only=True))
    emit(
        "storage",
        sparsity=fsparse.sparsity(state)["w"],
        bool_bytes=mask.numel(),
        packed_bytes=packed["w"]["bits"].nbytes,
        coo_bytes=coo.indices().nbytes + coo.values().nbytes,
        packed_file=saved(packed),
        coo_file=saved({"w": coo}),
        round_trip_exact=bool(torch.equal(restored["w"].mask, mask)),
        pack_seconds=best_time(lambda: fsparse.pack_mask(mask), repeats),
        unpack_seconds=best_time(
            lambda: fsparse.unpack_mask(packed["w"]["bits"], tuple(mask.shape)), repeats
        ),
    )


def small_case(scale: float, repeats: int, ao_repeats: int, phase: str) -> None:
    count = 1000  # per-entry overhead: the same at every scale (and quick anyway)
    gen = torch.Generator().manual_seed(5)
    data = {f"t{i}": torch.randn(64, 64, generator=gen) for i in range(count)}
    config: dict[str, Any] = {"sparsity_level": LEVEL}
    if phase == "memory":
        memory_phase(data, config)
        return
    emit("data", shape=[count, 64, 64], bytes=sum(t.nbytes for t in data.values()))
    emit("read", seconds=best_time(lambda: [t.abs().sum() for t in data.values()], repeats))
    state = fsparse.init(data, **config)
    stepped = fsparse.step(state)
    seconds = best_time(lambda: fsparse.step(state), repeats)
    one_by_one = best_time(lambda: fsparse.step(state, mask_fn=_one_by_one), repeats)
    emit("fsparse", seconds=seconds, unbatched_seconds=one_by_one)
    sparsifier = _ao_sparsifier(data, **config)
    seconds = best_time(sparsifier.step, ao_repeats)
    same = [torch.equal(stepped[n].mask, sparsifier.get_mask(n).bool()) for n in data]
    emit("torch.ao", seconds=seconds, identical=all(same), diff_tensors=same.count(False),
         ties_only=all(same))  # fmt: skip


def _one_by_one(data: torch.Tensor, config: fsparse.SparsityConfig) -> torch.Tensor:
    return fsparse.config_norm_mask(data, config)  # not the norm mask object: never batched


def dlrm_case(scale: float, repeats: int, ao_repeats: int, phase: str) -> None:
    gen = torch.Generator().manual_seed(6)
    tables = {
        f"t{i}": torch.randn(max(1, round(rows * scale)), 16, generator=gen)
        for i, rows in enumerate(DLRM_ROWS)
    }
    config: dict[str, Any] = {"sparsity_level": LEVEL}
    data_bytes = sum(t.nbytes for t in tables.values())
    if phase == "memory":
        fsparse.step(fsparse.init({"warm": tables["t2"][: 1 << 15].clone()}, **config))
        _fsparse_peak(tables, config)
    else:
        emit("data", shape=[sum(t.shape[0] for t in tables.values()), 16], bytes=data_bytes)
        emit("read", seconds=best_time(lambda: [t.abs().sum() for t in tables.values()], repeats))
        ours = _fsparse_masks(tables, config, repeats)
    need = 2 * data_bytes + 8 * max(t.nbytes for t in tables.values())
    if available_bytes() < need:  # torch.ao: float masks, plus one table's sort temporaries
        emit("torch.ao", skipped=f"needs about {need / 2**30:.1f} GiB, "
             f"{available_bytes() / 2**30:.1f} GiB available")  # fmt: skip
        return
    limit_address_space()
    try:
        _ao_sparsifier({"warm": tables["t2"][: 1 << 15].clone()}, **config).step()
        sparsifier = _ao_sparsifier(tables, **config)
        _, seconds, extra = peak_extra(sparsifier.step)  # one step: it takes a while
    except (RuntimeError, MemoryError) as err:
        emit("torch.ao", skipped=f"out of memory: {str(err).splitlines()[0][:120]}")
        return
    if phase == "memory":
        emit("torch.ao", peak_extra=extra)
        return
    verdicts = [
        _compare(tables[n], ours[n], sparsifier.get_mask(n).bool(), (1, 4), 4) for n in tables
    ]
    emit(
        "torch.ao", seconds=seconds,
        identical=all(v["identical"] for v in verdicts),
        diff_elements=sum(v["diff_elements"] for v in verdicts),
        ties_only=all(v["ties_only"] for v in verdicts),
    )  # fmt: skip


def _fsparse_masks(
    tables: dict[str, torch.Tensor], config: dict[str, Any], repeats: int
) -> dict[str, torch.Tensor]:
    """Time ``fsparse.step`` over ``tables``; only the new masks outlive it."""
    state = fsparse.init(tables, **config)
    stepped = fsparse.step(state)
    emit("fsparse", seconds=best_time(lambda: fsparse.step(state), repeats))
    return {name: stepped[name].mask for name in tables}


class EmbeddingMLP(nn.Module):
    """A small recommender-style model: one embedding bag and an MLP head."""

    def __init__(self, rows: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.emb = nn.EmbeddingBag(rows, dim, mode="mean")
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        )  # fmt: skip

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.emb(indices, offsets))  # type: ignore[no-any-return]


def train_case(scale: float, repeats: int, ao_repeats: int) -> None:
    torch.manual_seed(7)
    rows, dim, hidden, batch, bag = 100_000, 64, 512, 4096, 8
    model = EmbeddingMLP(rows, dim, hidden)
    indices = torch.randint(0, rows, (batch * bag,))
    offsets = torch.arange(0, batch * bag, bag)
    target = torch.randn(batch, 1)
    weights = {n: p for n, p in model.named_parameters() if p.dim() == 2}
    emit("data", shape=[rows, dim], bytes=sum(p.nbytes for p in model.parameters()),
         weights=sorted(weights), batch=batch, hidden=hidden)  # fmt: skip

    safe = {name: name.replace(".", "__") for name in weights}
    state = fsparse.step(
        fsparse.init({safe[n]: p for n, p in weights.items()}, sparsity_level=LEVEL)
    )
    ao_model = copy.deepcopy(model)
    sparsifier = _ao_sparsifier({safe[n]: p.detach() for n, p in weights.items()},
                                sparsity_level=LEVEL)  # fmt: skip
    sparsifier.step()
    same_masks = all(torch.equal(state[safe[n]].mask, sparsifier.get_mask(safe[n]).bool())
                     for n in weights)  # fmt: skip
    for name in weights:
        module = ao_model.get_submodule(name.rsplit(".", 1)[0])
        parametrize.register_parametrization(
            module, "weight", FakeSparsity(sparsifier.get_mask(safe[name]))
        )

    def dense() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(indices, offsets), target)
        loss.backward()
        return loss.detach()

    def ours() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        params: dict[str, torch.Tensor] = dict(model.named_parameters())
        masked = fsparse.sparsified(state)
        params.update({name: masked[safe[name]] for name in weights})
        out = functional_call(model, params, (indices, offsets))
        loss = nn.functional.mse_loss(out, target)
        loss.backward()
        return loss.detach()

    def theirs() -> torch.Tensor:
        ao_model.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(ao_model(indices, offsets), target)
        loss.backward()
        return loss.detach()

    same_loss = math.isclose(float(ours()), float(theirs()), rel_tol=1e-5)
    best = {"dense": math.inf, "fsparse": math.inf, "torch.ao": math.inf}
    for _ in range(max(repeats, 3) * 4):  # interleaved rounds: drift hits all three alike
        for label, fn in (("dense", dense), ("fsparse", ours), ("torch.ao", theirs)):
            best[label] = min(best[label], best_time(fn, 1))
    emit("train", **best, same_masks=same_masks, same_loss=same_loss)


def run(case: str, scale: float, repeats: int, ao_repeats: int, phase: str) -> None:
    """Run one case's ``"time"`` or ``"memory"`` phase (training has no memory phase)."""
    torch.set_grad_enabled(case == "train")
    if case in BLOCK_CASES:
        block_case(case, scale, repeats, ao_repeats, phase)
    elif case == "5":
        small_case(scale, repeats, ao_repeats, phase)
    elif case == "6":
        dlrm_case(scale, repeats, ao_repeats, phase)
    elif case == "train":
        if phase == "time":
            train_case(scale, repeats, ao_repeats)
    else:
        raise ValueError(f"unknown case {case!r}")
