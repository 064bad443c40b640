"""A benchmark run: a plan of rows, each measured in its own process, plus the machine it ran on."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from .measure import RowSpec

log = logging.getLogger(__name__)
STUDENT_SIZES = (256, 512, 1024)
FIXED_SIZE = {"lite_medsam": 256, "sam_vit_b": 1024, "sam_vit_l": 1024, "sam_vit_h": 1024}
DEFAULT_MODELS = ("kdsam", "lite_medsam", "sam_vit_b", "sam_vit_h")
DEFAULT_BACKENDS = ("torch", "onnx", "onnx-int8")


def build_plan(models=DEFAULT_MODELS, sizes=STUDENT_SIZES, backends=DEFAULT_BACKENDS, *, repeats: int = 5,
               vit_repeats: int = 2, vit_h_warmup: int = 1, warmup: int = 1, decoder_repeats: int = 30,
               threads: int | None = None, onnx_dir: str | None = None, student_checkpoint: str | None = None,
               student_config: dict | None = None, flops: bool = True) -> list[RowSpec]:
    """Rows: each student at each size on each backend; the other models at their own size on torch.

    ``student_checkpoint`` replaces the random student at the checkpoint's own size (its weights
    matter only to the accuracy column and to int8 calibration, not to timing).
    """
    from kdsam_core.errors import KDSAMError
    from kdsam_core.fast import check_backend

    for b in backends:
        check_backend(b)
    if any(int(s) < 32 or int(s) % 32 for s in sizes):
        raise KDSAMError(f"student sizes must be positive multiples of 32 (256, 512, 1024), not {list(sizes)}")
    plan = []
    for name in models:
        if name in ("kdsam", "kdsam_tiny"):
            ckpt_size = _checkpoint_size(student_checkpoint) if name == "kdsam" else None
            for size in sizes:
                for backend in backends:
                    ck = student_checkpoint if ckpt_size == size else None
                    plan.append(RowSpec(model=name, img_size=size, backend=backend, checkpoint=ck,
                                        config={} if ck else dict(student_config or {}), warmup=warmup,
                                        repeats=repeats, decoder_repeats=decoder_repeats, threads=threads,
                                        onnx_dir=_onnx_folder(onnx_dir, name, size, ck), flops=flops))
        elif name in FIXED_SIZE:
            vit = name.startswith("sam_vit")
            plan.append(RowSpec(model=name, backend="torch", warmup=vit_h_warmup if vit else warmup,
                                repeats=vit_repeats if vit else repeats, decoder_repeats=decoder_repeats,
                                threads=threads, flops=flops))
        else:
            raise KDSAMError(f"unknown model {name!r}: choose from kdsam, kdsam_tiny, {', '.join(FIXED_SIZE)}")
    return plan


def _checkpoint_size(checkpoint: str | None) -> int | None:
    if not checkpoint:
        return None
    from kdsam_core.checkpoint import read_metadata

    return int(read_metadata(checkpoint).get("config", {}).get("img_size", 0)) or None


def _onnx_folder(root: str | None, name: str, size: int, checkpoint: str | None) -> str | None:
    if root is None:
        return None  # kdsam_core.fast's per-model cache folder
    tag = "trained" if checkpoint else "random"
    return str(Path(root) / f"{name}{size}-{tag}")


def machine_info() -> dict:
    """CPU model, cores, threads, memory, library versions, load average."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = ""
    try:
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
    except (OSError, StopIteration):
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "isa": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f" {f}" in flags],
            "memory_gb": mem_gb, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_row(spec: RowSpec, *, isolate: bool = True, timeout: float | None = None) -> dict:
    """Measure one row, in a fresh Python process unless ``isolate`` is False."""
    load_before = load_average()
    t0 = time.perf_counter()
    if not isolate:
        from .measure import measure_row

        row = measure_row(spec)
    else:
        with tempfile.TemporaryDirectory(prefix="kdsam-bench-") as tmp:
            spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "row.json"
            spec_path.write_text(json.dumps(asdict(spec)))
            env = dict(os.environ)
            env.setdefault("PYTHONWARNINGS", "ignore")
            proc = subprocess.run([sys.executable, "-m", "kdsam_bench.measure", str(spec_path), str(out_path)],
                                  env=env, timeout=timeout, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not out_path.exists():
                tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
                log.error("row %s failed (exit %s):\n%s", spec.label, proc.returncode, tail)
                return {"label": spec.label, "spec": asdict(spec), "model": spec.model, "backend": spec.backend,
                        "img_size": spec.img_size or FIXED_SIZE.get(spec.model), "error": tail or f"exit {proc.returncode}"}
            row = json.loads(out_path.read_text())
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    row["load_before"] = load_before
    row["load_after"] = load_average()
    return row


def run_plan(plan: list[RowSpec], *, isolate: bool = True,
             progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Measure every row; returns the result dict (machine, rows, ratios to the student)."""
    started = dt.datetime.now(dt.UTC)
    result = {"started_utc": started.isoformat(timespec="seconds"), "machine": machine_info(),
              "git_commit": git_commit(), "load_average_start": load_average(), "rows": []}
    for i, spec in enumerate(plan):
        log.info("[%d/%d] %s", i + 1, len(plan), spec.label)
        row = run_row(spec, isolate=isolate)
        result["rows"].append(row)
        if progress is not None:
            progress(i + 1, len(plan), row)
    result["load_average_end"] = load_average()
    result["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    add_ratios(result)
    return result


def student_reference(rows: list[dict], size: int) -> dict | None:
    """The torch student row at ``size`` (the ratio reference), if measured."""
    for r in rows:
        if r.get("model", "").startswith("kdsam") and r.get("backend") == "torch" and r.get("img_size") == size \
                and "error" not in r:
            return r
    return None


def add_ratios(result: dict) -> None:
    """``vs_student``: this row's latency / the torch student's at the same input size (>1: slower)."""
    rows = result["rows"]
    for r in rows:
        ref = student_reference(rows, r.get("img_size"))
        if ref is None or "error" in r:
            continue
        r["vs_student"] = {k: r[k]["median"] / ref[k]["median"] for k in ("encoder_ms", "decoder_ms", "click_ms")
                           if ref[k]["median"] > 0}


def attach_dice(result: dict, accuracy: dict, mapping: dict[str, str] | None = None, *,
                protocols: tuple[str, ...] | list[str] = ("click",)) -> int:
    """Put the Dice of an evaluation summary, per protocol, on the rows it names (``row["dice"][protocol]``).

    ``accuracy`` is an evaluation result (``kdsam-bench accuracy`` or ``kdsam-train evaluate``):
    ``summary[label]["all"][protocol]["dice"]``. Its labels are row labels
    (``kdsam@256/onnx-int8``) or are mapped to them by ``mapping`` (``{"student": "kdsam@256/torch"}``).
    Returns the number of (row, protocol) cells filled.
    """
    mapping = mapping or {}
    by_label = {r["label"]: r for r in result["rows"]}
    n = 0
    for label, per_ds in accuracy.get("summary", {}).items():
        row = by_label.get(mapping.get(label, label))
        if row is None:
            continue
        for protocol in protocols:
            cell = per_ds.get("all", {}).get(protocol)
            if cell is None:
                continue
            row.setdefault("dice", {})[protocol] = {"dice": cell["dice"], "n": cell["n"],
                                                    "split": accuracy.get("split"), "source_label": label}
            n += 1
    result.setdefault("accuracy", []).append({"split": accuracy.get("split"), "protocols": list(protocols),
                                              "models": accuracy.get("models"), "cells_with_dice": n})
    return n
