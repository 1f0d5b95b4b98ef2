"""The demo's seed table: one markdown row per finished demo run, from its demo_summary.json.

    .venv/bin/python bench/demo_seeds.py /tmp/s8/c42 /tmp/s8/c1 /tmp/s8/c2 /tmp/s8/c3 /tmp/s8/c4

Each argument is a demo --output_dir. Columns: the seed; first-attempt accuracy on the held-out
problems before -> after training, with the problems gained / lost and the exact sign test, for
all of them and for the held-out wordings alone; then the verify-and-revise loop after training
(and before it, in brackets): Acc@t1 -> Acc@final, fixed / broken with the sign test, the
verifier's recall on right and on wrong answers and its balanced accuracy with the one-sided
Fisher test (apo.metrics.loop_report defines each); the wall time of the run. The closing
lines count the seeds that meet issue 26's bars.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from demo_apo_pipeline import CONFIG_FILE, SUMMARY_FILE, format_p, format_rate  # noqa: E402
from apo.errors import InputError  # noqa: E402
from apo.metrics import loop_helps, verifier_discriminates  # noqa: E402


def load_run(folder: str) -> tuple[dict, dict]:
    """(demo_config.json, demo_summary.json) of a finished demo run in `folder`."""
    paths = [os.path.join(folder, name) for name in (CONFIG_FILE, SUMMARY_FILE)]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise InputError(f"{missing[0]} does not exist: pass the --output_dir of a demo run that finished")
    config, summary = (json.load(open(path, encoding="utf-8")) for path in paths)
    return config, summary


def _first(group: dict) -> str:
    n = group["problems"]
    return (f"{group['before_correct']}/{n} -> {group['after_correct']}/{n}, {group['gained']} / {group['lost']}, "
            f"{format_p(group['p_value'])}")


def _loop(report: dict) -> str:
    n = report["problems"]
    return (f"{report['t1_correct']}/{n} -> {report['final_correct']}/{n}, {report['fixed']} / {report['broken']}, "
            f"{format_p(report['p_value'])}")


def _verifier(report: dict) -> str:
    return (f"{format_rate(report['recall_on_correct'])} / {format_rate(report['recall_on_wrong'])}, "
            f"{format_rate(report['balanced_accuracy'])} ({format_p(report['verifier_p_value'])})")


def table(runs: list[tuple[dict, dict]]) -> str:
    """The markdown table and the counts under it."""
    lines = ["| seed | first attempt, all held-out: before -> after, gained / lost | held-out wordings | "
             "loop after training: Acc@t1 -> Acc@final, fixed / broken | verifier after: recall right / wrong, "
             "balanced (Fisher) | loop before training | verifier before | trained turns | minutes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    counts = {"no_harm": 0, "helps": 0, "discriminates": 0, "learned": 0, "carries_over": 0}
    for config, summary in runs:
        correction = summary.get("self_correction")
        if correction is None or "before_correct" not in summary["first_attempt_changes"]:
            raise InputError(f"the run of seed {config['seed']} has no self-correction report or first-attempt counts "
                             "(max_correction_turns 1, or a demo from before issue 26)")
        after, before = correction["after"]["all"], correction["before"]["all"]
        wording = (summary.get("by_wording") or {}).get("heldout_wordings")
        lines.append(f"| {config['seed']} | {_first(summary['first_attempt_changes'])} | "
                     f"{_first(wording) if wording else 'n/a'} | {_loop(after)} | {_verifier(after)} | "
                     f"{_loop(before)} | {_verifier(before)} | {correction['trained_turns']} | "
                     f"{summary['seconds']['total'] / 60:.1f} |")
        counts["no_harm"] += after["broken"] <= after["fixed"]
        counts["helps"] += loop_helps(after)
        counts["discriminates"] += verifier_discriminates(after)
        counts["learned"] += bool(summary["effect_beyond_noise"])
        counts["carries_over"] += (summary.get("carry_over") or {}).get("kind") == "carries_over"
    n = len(runs)
    lines += ["", f"Of {n} seeds: the loop after training broke no more answers than it fixed on {counts['no_harm']}, "
              f"raised accuracy beyond noise (sign test p < 0.05) on {counts['helps']}; the verifier beat a constant "
              f"verdict beyond noise (Fisher p < 0.05) on {counts['discriminates']}; first attempts learned beyond "
              f"noise on {counts['learned']}, carrying over to the held-out wordings on {counts['carries_over']}."]
    return "\n".join(lines)


def main(folders: list[str]) -> str:
    if {"-h", "--help"} & set(folders):
        print(__doc__)
        return __doc__
    if not folders:
        raise InputError("pass one or more demo --output_dir folders (see the module docstring)")
    text = table([load_run(folder) for folder in folders])
    print(text)
    return text


if __name__ == "__main__":
    from apo.cli import run_main

    run_main(lambda argv: main(argv))
