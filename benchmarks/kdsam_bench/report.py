"""Tables (terminal and markdown), the targets check and the PNG plot of a benchmark result."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)
COLUMNS = ("row", "params M", "enc GFLOPs", "encoder ms", "enc min ms", "x student", "decoder ms",
           "click-to-mask ms", "enc peak MB")


def dice_protocols(result: dict) -> list[str]:
    """The evaluation protocols whose Dice some row carries (a column each); ['click'] when none."""
    seen: list[str] = []
    for r in result["rows"]:
        seen += [p for p in (r.get("dice") or {}) if p not in seen]
    return seen or ["click"]


def columns(result: dict) -> list[str]:
    return list(COLUMNS) + [f"Dice {p}" for p in dice_protocols(result)]


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def table_rows(result: dict) -> list[list[str]]:
    out = []
    protocols = dice_protocols(result)
    for r in result["rows"]:
        if "error" in r:
            out.append([r["label"], "error: " + r["error"].splitlines()[-1][:60]] + [""] * (len(columns(result)) - 2))
            continue
        ratio = r.get("vs_student", {}).get("encoder_ms")
        flops = r.get("encoder_flops")
        dice = r.get("dice") or {}
        out.append([
            r["label"], f"{r['params']['total'] / 1e6:.1f}", "-" if flops is None else f"{flops / 1e9:.1f}",
            _fmt_ms(r["encoder_ms"]["median"]) + f" (n={r['encoder_ms']['n']})", _fmt_ms(r["encoder_ms"]["min"]),
            "-" if ratio is None else f"{ratio:.2f}x", _fmt_ms(r["decoder_ms"]["median"]),
            _fmt_ms(r["click_ms"]["median"]), f"{r['encoder_peak_mb']:.0f}",
        ] + ["-" if p not in dice else f"{100 * dice[p]['dice']:.2f}" for p in protocols])
    return out


def text_table(result: dict) -> str:
    cols = columns(result)
    rows = [cols] + table_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def markdown_table(result: dict) -> str:
    rows, cols = table_rows(result), columns(result)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _row(result: dict, model: str, size: int, backend: str = "torch") -> dict | None:
    for r in result["rows"]:
        if r.get("model") == model and r.get("img_size") == size and r.get("backend") == backend and "error" not in r:
            return r
    return None


def _students(result: dict, size: int) -> list[dict]:
    return [r for r in result["rows"] if r.get("model", "").startswith("kdsam") and r.get("img_size") == size
            and "error" not in r]


def targets(result: dict) -> list[dict]:
    """The issue's targets, each with the measured figure and whether it is met (None: not measured)."""
    out = []

    def enc(r):
        return r["encoder_ms"]["median"]

    for teacher, need in (("sam_vit_b", 30.0), ("sam_vit_h", 100.0)):
        t = _row(result, teacher, 1024)
        for s in _students(result, 1024):
            if t is None:
                continue
            ratio = enc(t) / enc(s)
            out.append({"target": f"student@1024 encoder >= {need:g}x faster than {teacher}", "row": s["label"],
                        "measured": f"{ratio:.1f}x ({_fmt_ms(enc(s))} vs {_fmt_ms(enc(t))} ms)", "met": ratio >= need})
    lite = _row(result, "lite_medsam", 256)
    for s in _students(result, 256):
        if lite is None:
            continue
        ratio = enc(lite) / enc(s)
        out.append({"target": "student@256 encoder no slower than LiteMedSAM@256", "row": s["label"],
                    "measured": f"{ratio:.2f}x ({_fmt_ms(enc(s))} vs {_fmt_ms(enc(lite))} ms)", "met": ratio >= 1.0})
    for r in result["rows"]:
        if r.get("model", "").startswith("kdsam") and "error" not in r:
            ms = r["click_ms"]["median"]
            out.append({"target": "click-to-mask <= 20 ms (cached embedding)", "row": r["label"],
                        "measured": f"{ms:.1f} ms", "met": ms <= 20.0})
    for r in result["rows"]:
        if r.get("backend") != "onnx-int8" or not r.get("dice"):
            continue
        ref = _row(result, r["model"], r["img_size"], "torch")
        for proto, d in r["dice"].items():
            if ref is not None and proto in (ref.get("dice") or {}):
                drop = 100 * (ref["dice"][proto]["dice"] - d["dice"])
                out.append({"target": "int8 costs <= 0.5 Dice points", "row": r["label"],
                            "measured": f"{-drop:+.2f} points ({proto}, {d['split']}, n={d['n']})",
                            "met": drop <= 0.5})
    if not any(t["target"].startswith("int8") for t in out):
        out.append({"target": "int8 costs <= 0.5 Dice points", "row": "-",
                    "measured": "not measured in this run (no accuracy JSON with torch and onnx-int8 rows)",
                    "met": None})
    return out


def targets_markdown(result: dict) -> str:
    lines = ["| target | row | measured | met |", "|---|---|---|---|"]
    for t in targets(result):
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {t['row']} | {t['measured']} | {met} |")
    return "\n".join(lines) + "\n"


def row_threads(result: dict) -> str:
    """The thread counts the rows ran with (torch intra-op; onnxruntime got the same)."""
    got = sorted({r.get("torch_threads") for r in result["rows"] if r.get("torch_threads")})
    return "/".join(str(t) for t in got) or str(result["machine"].get("torch_threads"))


def machine_line(result: dict) -> str:
    m = result["machine"]
    return (f"{m['cpu']}, {m['logical_cpus']} logical CPUs ({', '.join(m['isa'])}), {m['memory_gb']} GiB; "
            f"torch {m['torch']} and onnxruntime {m['onnxruntime']} with {row_threads(result)} thread(s) per row "
            f"(torch's default here: {m['torch_threads']}), "
            f"Python {m['python']}; load average (1, 5, 15 min) {result.get('load_average_start')} at the start, "
            f"{result.get('load_average_end')} at the end")


def markdown(result: dict, command: str | None = None) -> str:
    parts = [f"# kdsam-bench result ({result['started_utc']} to {result.get('finished_utc')})\n",
             f"Machine: {machine_line(result)}. Commit {result.get('git_commit')}.\n"]
    if command:
        parts.append(f"Command: `{command}`\n")
    for note in result.get("notes", []):
        parts.append(f"Note: {note}\n")
    parts += [("Latencies are medians of the timed calls (n per row in the encoder column; `enc min` the fastest). `x student`: this row's "
              "encoder latency over the torch student's at the same input size. Click-to-mask: one click through "
              "`KDSAMPredictor.predict` with the embedding cached, to a 512 x 512 mask. Peak MB: resident memory "
              "the encoder forward adds on top of the loaded model (sampled RSS). FLOPs = 2 x MACs, one image. "
              "Dice: mean over the split, in points (x100).\n"), markdown_table(result), "\n## Targets\n",
             targets_markdown(result)]
    return "\n".join(parts)


def plot(result: dict, path: str | Path) -> Path:
    """Encoder latency (log scale) and click-to-mask latency per row, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "error" not in r]
    labels = [r["label"] for r in rows]
    colors = ["#1f77b4" if r["model"].startswith("kdsam") else "#d62728" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.45 * len(rows) + 2.0), sharey=True)
    y = range(len(rows))
    axes[0].barh(y, [r["encoder_ms"]["median"] for r in rows], color=colors)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("image encoder latency, ms (log scale)")
    axes[1].barh(y, [r["click_ms"]["median"] for r in rows], color=colors)
    axes[1].axvline(20, color="k", ls="--", lw=1)
    axes[1].set_xlabel("click-to-mask latency, ms (cached embedding; dashed: 20 ms)")
    axes[0].set_yticks(list(y), labels)
    axes[0].invert_yaxis()
    for ax, key in ((axes[0], "encoder_ms"), (axes[1], "click_ms")):
        for i, r in enumerate(rows):
            ax.text(r[key]["median"], i, " " + _fmt_ms(r[key]["median"]), va="center", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    m = result["machine"]
    fig.suptitle(f"kdsam-bench on {m['cpu']} ({m['logical_cpus']} CPUs, {row_threads(result)} thread(s) per row), "
                 f"torch {m['torch']}; "
                 f"load {result.get('load_average_start')}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(result: dict, out: str | Path, command: str | None = None) -> dict[str, Path]:
    """``out``.json, ``out``.md and ``out``.png; returns their paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if command:
        result["command"] = command
    paths = {"json": out.with_suffix(".json"), "md": out.with_suffix(".md"), "png": out.with_suffix(".png")}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["md"].write_text(markdown(result, command))
    plot(result, paths["png"])
    return paths
