"""Targets check for a model card: ``python -m kdsam_train.report RESULT.json [--student S --teacher T]``.

Prints a markdown table of box Dice (student vs teacher vs the KD SAM paper's figure), the
per-image paired box-Dice difference, and one- and five-click Dice (student vs teacher) per
dataset, from an ``evaluate`` result file. ``--teacher-result OTHER.json`` takes the teacher from
another evaluation run instead (a student evaluated alone, compared with a teacher evaluated
earlier); the two runs must have scored the same split file, the same images and the same
prompt settings, else it is an error that names the difference. The "teacher" may be another
student (``--teacher v4``, an earlier version); ``--names v5 v4`` then names the columns.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from kdsam_core.atomic import write_text

PAPER_DICE = {"kvasir_seg": 0.9221, "isic2017": 0.8871, "hc18": 0.9189, "busi": 0.8216}
# settings that fix the images and prompts of an evaluation run: two runs compared must agree on them
SAME_RUN_KEYS = ("split", "split_file_sha256", "box_jitter", "max_per_dataset")
IF_RECORDED = ("seed",)  # results written before these were recorded lack them


def _summary(result: dict, label: str, what: str) -> dict:
    if label not in result["summary"]:
        raise ValueError(f"the {what} result has no model {label!r}; it has {sorted(result['summary'])}")
    return result["summary"][label]


def _box_dice(result: dict, label: str) -> dict[str, tuple[str, float]]:
    """Per-image box Dice of ``label``: image id -> (dataset, Dice)."""
    return {r["id"]: (r["dataset"], r["dice"]) for r in result["per_image"]
            if r["model"] == label and r["protocol"] == "box"}


def check_same_run(result: dict, other: dict, student_ids, teacher_ids) -> None:
    """Raise ValueError unless ``other`` scored the images (ids of the two models' box rows) and
    prompts that ``result`` did."""
    diff = [k for k in SAME_RUN_KEYS if result.get(k) != other.get(k)]
    diff += [k for k in IF_RECORDED if k in result and k in other and result[k] != other[k]]
    if diff:
        raise ValueError("the two evaluation runs differ in " + ", ".join(
            f"{k} ({result.get(k)!r} vs {other.get(k)!r})" for k in diff))
    a, b = set(student_ids), set(teacher_ids)
    if a != b:
        raise ValueError(f"the two evaluation runs scored other images: {len(a - b)} only in the student's, "
                         f"{len(b - a)} only in the teacher's (e.g. {sorted(a ^ b)[:3]})")


def targets_table(result: dict, student: str = "student", teacher: str = "teacher",
                  teacher_result: dict | None = None, names: tuple[str, str] = ("student", "teacher")) -> str:
    """The table; ``names`` are the two models' names in its header (e.g. ``("v5", "v4")`` when
    the "teacher" is an earlier student)."""
    t_result = result if teacher_result is None else teacher_result
    s_img, t_img = _box_dice(result, student), _box_dice(t_result, teacher)
    if teacher_result is not None:
        check_same_run(result, teacher_result, s_img, t_img)
    s, t = _summary(result, student, "student"), _summary(t_result, teacher, "teacher")
    sn, tn = names
    lines = [f"| dataset | n | box Dice {sn} | box Dice {tn} | paper KD SAM | box {sn} >= {tn} | "
             f"box {sn} - {tn} per image (mean ± std; images >=) | "
             f"1-click Dice {sn} | 1-click Dice {tn} | 5-click Dice {sn} | 5-click Dice {tn} |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for ds in [d for d in s if d != "all"] + ["all"]:
        sb, tb = s[ds]["box"]["dice"], t[ds]["box"]["dice"]
        paper = PAPER_DICE.get(ds)
        d = np.array([dice - t_img[i][1] for i, (dsi, dice) in s_img.items() if ds in ("all", dsi) and i in t_img])
        paired = f"{d.mean():+.4f} ± {d.std():.4f}; {int((d >= 0).sum())}/{d.size}" if d.size else "-"
        lines.append(
            f"| {ds} | {s[ds]['box']['n']} | {sb:.4f} | {tb:.4f} | {'' if paper is None else f'{paper:.4f}'} | "
            f"{'yes' if sb >= tb else 'no'} | {paired} | {s[ds]['click']['dice']:.4f} | {t[ds]['click']['dice']:.4f} | "
            f"{s[ds].get('clicks_5', {}).get('dice', float('nan')):.4f} | "
            f"{t[ds].get('clicks_5', {}).get('dice', float('nan')):.4f} |")
    return "\n".join(lines) + "\n"


def _read(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the evaluation result {path}: {e}") from e


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kdsam_train.report", description=__doc__.splitlines()[0])
    p.add_argument("result", help="JSON written by kdsam-train evaluate")
    p.add_argument("--student", default="student")
    p.add_argument("--teacher", default="teacher")
    p.add_argument("--teacher-result", default="", help="take the teacher from this evaluation JSON instead")
    p.add_argument("--names", nargs=2, default=["student", "teacher"], metavar=("STUDENT", "TEACHER"),
                   help="the two models' names in the table's header")
    p.add_argument("-o", "--out", default="", help="write the table to this file (atomically) instead of stdout")
    a = p.parse_args(argv)
    try:
        table = targets_table(_read(a.result), a.student, a.teacher,
                              _read(a.teacher_result) if a.teacher_result else None, tuple(a.names))
    except ValueError as e:  # nothing is written: an earlier table at --out stays as it was
        print(f"kdsam_train.report: error: {e}", file=sys.stderr)
        return 2
    if a.out:
        write_text(a.out, table)
    else:
        print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
