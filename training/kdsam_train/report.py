"""Targets check for a model card: ``python -m kdsam_train.report RESULT.json [--student S --teacher T]``.

Prints a markdown table of box Dice (student vs teacher vs the KD SAM paper's figure) and
one-click Dice (student vs teacher) per dataset, from an ``evaluate`` result file.
"""

from __future__ import annotations

import argparse
import json

PAPER_DICE = {"kvasir_seg": 0.9221, "isic2017": 0.8871, "hc18": 0.9189, "busi": 0.8216}


def targets_table(result: dict, student: str = "student", teacher: str = "teacher") -> str:
    s, t = result["summary"][student], result["summary"][teacher]
    lines = ["| dataset | n | box Dice student | box Dice teacher | paper KD SAM | box >= teacher | "
             "1-click Dice student | 1-click Dice teacher | 5-click Dice student | 5-click Dice teacher |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for ds in [d for d in s if d != "all"] + ["all"]:
        sb, tb = s[ds]["box"]["dice"], t[ds]["box"]["dice"]
        paper = PAPER_DICE.get(ds)
        lines.append(
            f"| {ds} | {s[ds]['box']['n']} | {sb:.4f} | {tb:.4f} | {'' if paper is None else f'{paper:.4f}'} | "
            f"{'yes' if sb >= tb else 'no'} | {s[ds]['click']['dice']:.4f} | {t[ds]['click']['dice']:.4f} | "
            f"{s[ds].get('clicks_5', {}).get('dice', float('nan')):.4f} | "
            f"{t[ds].get('clicks_5', {}).get('dice', float('nan')):.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("result")
    p.add_argument("--student", default="student")
    p.add_argument("--teacher", default="teacher")
    a = p.parse_args(argv)
    with open(a.result) as f:
        print(targets_table(json.load(f), a.student, a.teacher), end="")


if __name__ == "__main__":
    main()
