"""Run plumbing shared by the phases: device/threads, seeding, DDP, atomic training state, CSV logs."""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from kdsam_core.atomic import atomic_path
from kdsam_core.device import pick_device, set_threads
from kdsam_core.errors import KDSAMError

log = logging.getLogger(__name__)


def setup(device: str, threads: int, seed: int) -> tuple[torch.device, int, int]:
    """Pick the device, start DDP when launched by torchrun, seed everything.

    Returns (device, rank, world_size). Under torchrun (``WORLD_SIZE`` > 1) the process
    group uses NCCL on CUDA and gloo on the CPU; each rank uses GPU ``LOCAL_RANK``.
    """
    set_threads(threads or None)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = pick_device(None if device in ("", "auto") else device)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    seed_all(seed + rank)
    return dev, rank, world


AMP_MODES = ("none", "bf16")


def autocast(device: torch.device, amp: str):
    """The context that runs the image encoder's forward under ``amp`` (its backward follows).

    ``none``: fp32 throughout. ``bf16``: ``torch.autocast`` with bfloat16 on the CPU or CUDA
    (convolutions and matrix products in bf16, weights, optimiser state and losses in fp32; no
    loss scaling is needed, bf16 has fp32's range). On a CPU without native bf16 (AVX512-BF16 or
    AMX) it still runs, only slower than fp32: a warning says so. Anything else is a KDSAMError.
    """
    if amp not in AMP_MODES:
        raise KDSAMError(f"amp must be one of {', '.join(AMP_MODES)}, not {amp!r}")
    if amp == "none":
        return contextlib.nullcontext()
    if device.type == "cpu" and not torch.backends.mkldnn.is_available():
        raise KDSAMError("amp bf16 on the CPU needs torch built with oneDNN (mkldnn); use amp: none")
    if device.type == "cpu" and not _cpu_has_bf16():
        log.warning("amp bf16: this CPU has no native bfloat16 (AVX512-BF16 / AMX); expect it slower than fp32")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": _np_state(), "python": _py_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal.tolist()), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _np_state():
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _py_state():
    version, internal, gauss = random.getstate()
    return (version, torch.tensor(internal, dtype=torch.int64), gauss)


def save_state(path: str | os.PathLike, state: dict) -> None:
    """``torch.save`` to a temporary file, then ``os.replace``: a kill never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_run_state(path: str | os.PathLike, weights_key: str, module, opt, step: int, skips, *,
                   rank: int, world: int, extra: dict | None = None) -> None:
    """Save a run's resumable state: weights, optimiser, step, the RNG state of every rank, skips,
    and ``extra`` (facts fixed at the run's start that a resumed run must not recompute).

    All ranks must call it (the RNG states are gathered); rank 0 writes.
    """
    rng = rng_state()
    if world > 1:
        import torch.distributed as dist

        gathered = [None] * world
        dist.all_gather_object(gathered, rng)
        rng = gathered
    if rank == 0:
        save_state(path, {weights_key: module.state_dict(), "optimizer": opt.state_dict(), "step": step,
                          "rng": rng, "skips": dict(skips.counts), **(extra or {})})


@dataclass
class RunContext:
    """What a training loop knows of its run: its folder, device, DDP rank and world size, the
    step it starts at, its CSV log (rank 0; None on the others), skip counts, and ``extra``:
    facts fixed at the run's start that every saved state carries (see :func:`save_run_state`)."""

    dir: Path
    device: torch.device
    rank: int
    world: int
    start: int
    csv: "CSVLog | None"
    skips: object
    extra: dict | None = None

    def save(self, weights_key: str, module, opt, step: int) -> None:
        """``<dir>/train_state.pt`` at ``step`` (all ranks call it; rank 0 writes)."""
        save_run_state(self.dir / "train_state.pt", weights_key, module, opt, step, self.skips, rank=self.rank,
                       world=self.world, extra=self.extra)


def load_state(path: str | os.PathLike) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(str(path), map_location="cpu", weights_only=True)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch: a permutation fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Indices of global step ``step``'s batch for ``rank``: a function of the step alone,
    so a resumed run sees the same data. Each rank takes ``batch_size`` of the
    ``batch_size * world`` consecutive entries of the epoch permutation."""
    per_step = batch_size * world
    steps_per_epoch = max(1, n // per_step)
    epoch, k = divmod(step, steps_per_epoch)
    order = epoch_order(n, seed, epoch)
    start = k * per_step + rank * batch_size
    return [int(i) for i in order[start:start + batch_size]]


class CSVLog:
    """Append rows to ``path``; the header is written once. On resume, rows past
    ``resume_step`` (logged after the last checkpoint) are dropped."""

    def __init__(self, path: str | os.PathLike, fields: list[str], resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.fields = fields
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
            self._rewrite(rows)
        elif not self.path.is_file() or resume_step is None:
            self._rewrite([])

    def _rewrite(self, rows: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, self.fields)
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow({k: row.get(k, "") for k in self.fields})


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 5% of ``base``."""
    import math

    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))
