"""The human-readable side of an evaluation: results.md, the comparison table and the PNG plots.

Everything here reads metrics dicts (or metrics.json files for --compare) produced by
apo.metrics.compute_metrics plus the provenance block evaluate_apo adds; nothing is
recomputed from generations. Percentages are
printed with one decimal; "n/a" marks a rate whose denominator is empty. A run in oracle mode
carries "oracle (upper bound)" in every title.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

from apo.errors import InputError, InputFileNotFoundError  # noqa: E402
from apo.records import write_text_atomic  # noqa: E402

HEADLINE = ("acc_t1", "acc_final", "improvement")
COMPARED_ROWS = (
    ("acc_t1", "Acc@t1 (first attempt)"),
    ("acc_final", "Acc@final (final attempt)"),
    ("improvement", "Improvement (final - first)"),
    ("delta_i_to_c", "delta(i->c) fixed"),
    ("delta_c_to_i", "delta(c->i) broken"),
    ("verifier.accuracy", "Verifier accuracy"),
    ("verifier.recall_on_correct", "Verifier recall on correct"),
    ("verifier.recall_on_wrong", "Verifier recall on wrong"),
    ("revision_rate", "Revision rate"),
    ("truncation_rate", "Truncation rate (turns)"),
)
TRANSITION_COLOURS = {"stayed_right": "#4c9a2a", "fixed": "#9fd356", "broken": "#e4572e", "stayed_wrong": "#a0a0a0"}


def pct(value: float | None, signed: bool = False) -> str:
    """A rate as a percentage with one decimal; "n/a" for None."""
    if value is None:
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def pct_unit(value: float | None) -> str:
    """`12.3%`, or "n/a" for None."""
    return "n/a" if value is None else f"{pct(value)}%"


def _lookup(summary: dict, dotted: str) -> float | None:
    value = summary
    for part in dotted.split("."):
        value = value[part]
    return value


def _ci(metrics: dict, name: str) -> str:
    interval = metrics["overall"]["ci95"].get(name)
    if interval is None:
        return "n/a"
    return f"[{pct(interval['low'])}, {pct(interval['high'])}]"


def run_title(metrics: dict) -> str:
    """`<model> | <mode label>`, e.g. `embedded | oracle (upper bound)`."""
    model = metrics.get("provenance", {}).get("model", {}).get("name", "model")
    return f"{model} | {metrics['mode_label']}"


# --- results.md ---


def results_markdown(metrics: dict) -> str:
    """results.md: the seed's first/final/improvement table, then per type, per level, sampled
    metrics, the verifier, transitions, truncation and what could not be graded."""
    overall = metrics["overall"]
    lines = [f"# Self-correction results: {run_title(metrics)}", ""]
    lines += _provenance_lines(metrics)
    lines += ["## First vs final attempt", "",
              "| Metric | First Attempt | Final Attempt | Improvement |", "| --- | --- | --- | --- |",
              f"| Accuracy (%) | {pct(overall['acc_t1'])} | {pct(overall['acc_final'])} | "
              f"{pct(overall['improvement'], signed=True)} |",
              f"| 95% interval | {_ci(metrics, 'acc_t1')} | {_ci(metrics, 'acc_final')} | {_ci(metrics, 'improvement')} |"]
    if "acc_t1_boxed_exact" in overall:
        strict_gain = overall["acc_final_boxed_exact"] - overall["acc_t1_boxed_exact"]
        lines += [f"| Accuracy, official A*-PO rule (%) | {pct(overall['acc_t1_boxed_exact'])} | "
                  f"{pct(overall['acc_final_boxed_exact'])} | {pct(strict_gain, signed=True)} |", "",
                  "The first row grades with the project's grader (equivalence up to notation); the official rule "
                  "(last \\boxed{} content equal after MATH's strip_string, EOS required) is what the A*-PO tables "
                  "report: compare a published number with that row."]
    lines += [""]
    lines += ["## By MATH type", ""] + _group_table(metrics["by_type"], "Type") + [""]
    lines += ["## By level", ""] + _group_table(metrics["by_level"], "Level") + [""]
    if metrics["samples_per_problem"] > 1:
        lines += _sampled_lines(metrics)
    lines += _detail_lines(metrics)
    return "\n".join(lines) + "\n"


def _provenance_lines(metrics: dict) -> list[str]:
    provenance = metrics.get("provenance")
    if not provenance:
        return []
    sampling = provenance["sampling"]
    decoding = "greedy" if sampling["temperature"] == 0 else f"temperature {sampling['temperature']}, top_p {sampling['top_p']}"
    return [f"Model `{provenance['model']['name']}`, eval file `{provenance['eval_file']['path']}` "
            f"(sha256 {provenance['eval_file']['sha256'][:12]}), {metrics['num_problems']} problems x "
            f"{metrics['samples_per_problem']} samples, {decoding}, max_new_tokens {sampling['max_new_tokens']}, "
            f"{attempts_phrase(provenance.get('config', {}).get('correction_mode'), sampling['max_correction_turns'])}"
            ", "
            f"grader {provenance['grader_version']}.", ""]


def attempts_phrase(correction_mode: str | None, max_correction_turns: int) -> str:
    """'first attempt only' when the mode never revises ('none') or allows one attempt, else 'up to N attempts'."""
    return "first attempt only" if correction_mode == "none" or max_correction_turns == 1 else (
        f"up to {max_correction_turns} attempts")


def _group_table(groups: dict, label: str) -> list[str]:
    rows = [f"| {label} | n | Acc@t1 | Acc@final | Improvement | i->c | c->i | Verifier acc | Revision rate |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, s in groups.items():
        rows.append(f"| {name} | {s['num_graded']} | {pct(s['acc_t1'])} | {pct(s['acc_final'])} | "
                    f"{pct(s['improvement'], signed=True)} | {pct(s['delta_i_to_c'])} | {pct(s['delta_c_to_i'])} | "
                    f"{pct(s['verifier']['accuracy'])} | {pct(s['revision_rate'])} |")
    return rows


def _sampled_lines(metrics: dict) -> list[str]:
    n = metrics["samples_per_problem"]
    ks = [str(k) for k in metrics["metric_settings"]["pass_k"]]
    header = f"| Group | mean@{n} t1 | mean@{n} final | maj@{n} t1 | maj@{n} final | " + \
        " | ".join(f"pass@{k} t1 | pass@{k} final" for k in ks) + " |"
    rows = ["## Sampled metrics", "", "maj@n: answers with whitespace removed vote; ties go to the first "
            "occurrence. pass@k: unbiased estimator of Chen et al. (2021).", "", header,
            "|" + " --- |" * (5 + 2 * len(ks))]
    groups = {"overall": metrics["overall"], **{f"type {k}": v for k, v in metrics["by_type"].items()},
              **{f"level {k}": v for k, v in metrics["by_level"].items()}}
    for name, s in groups.items():
        sampled = s["sampled"]
        cells = [pct(sampled["mean_at_n_t1"]), pct(sampled["mean_at_n_final"]), pct(sampled["maj_at_n_t1"]),
                 pct(sampled["maj_at_n_final"])]
        cells += [pct(sampled[f"pass_at_k_{w}"][k]) for k in ks for w in ("t1", "final")]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows + [""]


def _detail_lines(metrics: dict) -> list[str]:
    overall, verifier = metrics["overall"], metrics["overall"]["verifier"]
    t = overall["transitions"]
    lines = ["## Verifier", "",
             f"{verifier['num_verifications']} first verifications (the check of each first attempt, PAG's "
             f"definition): accuracy {pct_unit(verifier['accuracy'])}, recall on "
             f"correct answers {pct_unit(verifier['recall_on_correct'])}, recall on wrong answers "
             f"{pct_unit(verifier['recall_on_wrong'])}, verdict parse failures {pct_unit(verifier['parse_failure_rate'])} "
             "(an unparsed verdict counts as a verifier error).", ""]
    every = overall.get("verifier_all_turns")
    if every is not None and every["num_verifications"] != verifier["num_verifications"]:
        lines += [f"All {every['num_verifications']} verify turns: accuracy {pct_unit(every['accuracy'])}, verdict "
                  f"parse failures {pct_unit(every['parse_failure_rate'])}.", ""]
    lines += ["## Transitions (first -> final)", "",
              "| stayed right | fixed (i->c) | broken (c->i) | stayed wrong |", "| --- | --- | --- | --- |",
              f"| {t['stayed_right']} | {t['fixed']} | {t['broken']} | {t['stayed_wrong']} |", "",
              "## Answers, truncation and grading", "",
              f"- No extractable answer (counted wrong): first attempt {overall['no_answer_t1']}, final "
              f"{overall['no_answer_final']} of {overall['num_graded']} episodes.",
              f"- Truncated at max_new_tokens: {pct_unit(overall['truncation_rate'])} of turns, "
              f"{pct_unit(overall['attempt_truncation_rate'])} of attempts.",
              f"- Ungradable gold answers (excluded from every rate): {metrics['ungradable']['count']}"
              + (f" ({', '.join(metrics['ungradable']['ids'][:20])})" if metrics["ungradable"]["count"] else "") + "."]
    skipped = metrics.get("provenance", {}).get("skipped_long_prompts")
    if skipped and skipped["count"]:
        lines.append(f"- Skipped, first prompt longer than the context window ({skipped['context_window']} tokens) "
                     f"allows (--skip_long_prompts; not in any rate): {skipped['count']} "
                     f"({', '.join(skipped['ids'][:20])}).")
    report = metrics.get("provenance", {}).get("grading_report_this_invocation")
    if report:
        lines.append(f"- Grader (this invocation): {report['graded']} graded, {report['timeouts']} timeouts and "
                     f"{report['errors']} errors (graded wrong).")
    return lines + [""]


# --- comparison ---


def _intervals_disjoint(a: dict, b: dict, name: str) -> bool | None:
    ia, ib = a["overall"]["ci95"].get(name), b["overall"]["ci95"].get(name)
    if ia is None or ib is None:
        return None
    return ia["high"] < ib["low"] or ib["high"] < ia["low"]


def comparison_markdown(runs: list[tuple[str, dict]]) -> str:
    """Side-by-side table of runs (name, metrics); each later run is differenced against the first.

    For Acc@t1, Acc@final and the improvement, "beyond CIs" marks a difference whose two 95%
    intervals do not overlap (a conservative test; overlapping intervals do not prove equality).
    """
    if len(runs) < 2:
        raise ValueError(f"a comparison needs at least 2 runs, got {len(runs)}")
    base_name, base = runs[0]
    header = "| Metric | " + " | ".join(f"{name} ({m['mode_label']})" for name, m in runs) + " | " + \
        " | ".join(f"{name} - {base_name}" for name, _ in runs[1:]) + " |"
    lines = ["# Comparison", "", header, "|" + " --- |" * (2 * len(runs))]
    for key, label in COMPARED_ROWS:
        values = [_lookup(m["overall"], key) for _, m in runs]
        diffs = []
        for (_, m), value in zip(runs[1:], values[1:]):
            diff = None if value is None or values[0] is None else value - values[0]
            cell = pct(diff, signed=True)
            if key in HEADLINE and diff is not None:
                disjoint = _intervals_disjoint(base, m, key)
                cell += " (beyond CIs)" if disjoint else " (within CIs)"
            diffs.append(cell)
        lines.append(f"| {label} | " + " | ".join(pct(v) for v in values) + " | " + " | ".join(diffs) + " |")
    lines += ["", "Differences in percentage points; \"beyond CIs\" = the two 95% intervals do not overlap.", ""]
    lines += _comparability_notes(runs)
    return "\n".join(lines) + "\n"


def _comparability_notes(runs: list[tuple[str, dict]]) -> list[str]:
    notes = []
    shas = {m.get("provenance", {}).get("eval_file", {}).get("sha256") for _, m in runs}
    if len(shas) > 1:
        notes.append("- Warning: the runs were evaluated on different eval files (sha256 differs).")
    counts = {(m["num_problems"], m["samples_per_problem"]) for _, m in runs}
    if len(counts) > 1:
        notes.append(f"- Warning: problem x sample counts differ between runs: {sorted(counts)}.")
    if any(m["mode"] == "oracle" for _, m in runs):
        notes.append("- Runs marked oracle (upper bound) retry only when the gold answer says wrong; they are not "
                     "self-correction.")
    return notes


# --- plots ---


def write_plots(metrics: dict, folder: str) -> list[str]:
    """accuracy_by_level.png, accuracy_by_type.png and transitions.png in `folder`; returns their paths."""
    title = run_title(metrics)
    paths = [_accuracy_bars(metrics["by_level"], "Level", f"Accuracy by level\n{title}",
                            os.path.join(folder, "accuracy_by_level.png")),
             _accuracy_bars(metrics["by_type"], "MATH type", f"Accuracy by type\n{title}",
                            os.path.join(folder, "accuracy_by_type.png")),
             _transition_chart(metrics, f"First -> final attempt\n{title}", os.path.join(folder, "transitions.png"))]
    return paths


def _accuracy_bars(groups: dict, label: str, title: str, path: str) -> str:
    names = list(groups)
    first = [100 * (groups[g]["acc_t1"] or 0.0) for g in names]
    final = [100 * (groups[g]["acc_final"] or 0.0) for g in names]
    positions = range(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.5))
    ax.bar([p - 0.2 for p in positions], first, width=0.4, label="first attempt", color="#8fb3d9")
    ax.bar([p + 0.2 for p in positions], final, width=0.4, label="final attempt", color="#1f5f99")
    ax.set_xticks(list(positions), [f"{g}\n(n={groups[g]['num_graded']})" for g in names],
                  rotation=30 if len(names) > 5 else 0, ha="right" if len(names) > 5 else "center")
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _transition_chart(metrics: dict, title: str, path: str) -> str:
    groups = {"overall": metrics["overall"], **{f"level {k}": v for k, v in metrics["by_level"].items()}}
    names = list(groups)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 2))
    left = [0.0] * len(names)
    for kind, colour in TRANSITION_COLOURS.items():
        shares = [100 * groups[g]["transitions"][kind] / groups[g]["num_graded"] if groups[g]["num_graded"] else 0.0
                  for g in names]
        ax.barh(names, shares, left=left, color=colour, label=kind.replace("_", " "))
        left = [a + b for a, b in zip(left, shares)]
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of episodes (%)")
    ax.set_title(title)
    ax.legend(ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(names) < 4 else -0.12), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --- summary line and comparison of finished runs ---


def summary_line(metrics: dict) -> str:
    """One fixed-format line with the headline numbers and the truncation rate."""
    overall, ci = metrics["overall"], metrics["overall"]["ci95"]

    def fmt(name: str) -> str:
        value = overall[name]
        if value is None:
            return f"{name} n/a"
        return f"{name} {value:.3f} [{ci[name]['low']:.3f}, {ci[name]['high']:.3f}]"

    return (f"{run_title(metrics)} | {fmt('acc_t1')} | {fmt('acc_final')} | {fmt('improvement')} | "
            f"truncated {overall['truncation_rate']:.1%} of turns | no answer {overall['no_answer_final']} | "
            f"ungradable {metrics['ungradable']['count']}")


def compare_runs(paths: list[str], output_dir: str) -> dict:
    """Side-by-side comparison of metrics.json files, or of benchmark-suite summary.json files, the
    first being the baseline; writes <output_dir>/comparison.md. Raises FileNotFoundError /
    ValueError naming a bad file, or a mix of the two kinds."""
    loaded = [(path, _load_compared(path)) for path in paths]
    summaries = [is_summary(payload) for _, payload in loaded]
    if any(summaries) and not all(summaries):
        raise InputError("--compare: give only metrics.json files or only summary.json files, not both: "
                         + ", ".join(f"{p} ({'summary' if s else 'metrics'})" for p, s in zip(paths, summaries)))
    if all(summaries):
        table = compare_summaries([(_run_name(path, paths), payload) for path, payload in loaded])
        write_text_atomic(os.path.join(output_dir, "comparison.md"), table)
        return {"runs": list(paths), "markdown": table}
    runs = []
    for path, metrics in loaded:
        for key in ("overall", "mode", "mode_label", "num_problems", "samples_per_problem"):
            if key not in metrics:
                raise InputError(f"--compare: {path} has no field {key!r}; is it an evaluate_apo metrics.json?")
        runs.append((os.path.basename(os.path.dirname(os.path.abspath(path))) or path, metrics))
    if len({name for name, _ in runs}) < len(runs):  # e.g. two runs/eval/metrics.json: name them by folder path
        runs = [(os.path.dirname(path) or path, metrics) for path, (_, metrics) in zip(paths, runs)]
    table = comparison_markdown(runs)
    write_text_atomic(os.path.join(output_dir, "comparison.md"), table)
    return {"runs": list(paths), "markdown": table}


def _load_compared(path: str) -> dict:
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"--compare: {path!r} not found")
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as err:
            raise InputError(f"--compare: {path} is not valid JSON ({err.msg})") from None


def _run_name(path: str, paths: list[str]) -> str:
    """A run's folder name, or its folder path when two compared files share the folder name."""
    names = [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in paths]
    name = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return name if names.count(name) == 1 and name else (os.path.dirname(path) or path)


# --- benchmark suite: summary.json and summary.md ---

# One column group per benchmark: (key in a summary cell, header); pass@k only where a benchmark was
# sampled, the strict columns only where its generations carry the official rule's verdicts.
# A new per-benchmark number is one more entry here, in summary_cell and in _summary_cells.
SUMMARY_COLUMNS = (("n", "n"), ("acc_t1", "Acc@t1"), ("acc_final", "Acc@final"), ("pass_at_k", "pass@k"),
                   ("acc_t1_boxed_exact", "strict t1"), ("acc_final_boxed_exact", "strict final"))


def summary_cell(metrics: dict) -> dict:
    """One model x benchmark cell of summary.json from that run's metrics.json.

    n = problems; with n samples per problem Acc@t1 and Acc@final are Avg@n (mean over all samples)
    and pass_at_k holds the unbiased pass@k of the final attempt for the largest k run (null with
    one sample). Intervals are metrics' 95% intervals ({"low", "high", "method"} or null).
    """
    overall, ci = metrics["overall"], metrics["overall"]["ci95"]
    ks = metrics["metric_settings"]["pass_k"]
    sampled = metrics["samples_per_problem"] > 1
    return {
        "n": metrics["num_problems"], "samples_per_problem": metrics["samples_per_problem"],
        "num_graded_episodes": overall["num_graded"], "ungradable": metrics["ungradable"]["count"],
        "acc_t1": overall["acc_t1"], "acc_t1_ci95": ci.get("acc_t1"),
        "acc_final": overall["acc_final"], "acc_final_ci95": ci.get("acc_final"),
        "pass_at_k": ({"k": max(ks), "t1": overall["sampled"]["pass_at_k_t1"][str(max(ks))],
                       "final": overall["sampled"]["pass_at_k_final"][str(max(ks))]} if sampled else None),
        "mode_label": metrics["mode_label"], "truncation_rate": overall["truncation_rate"],
        # the official A*-PO rule (last \\boxed{} exact after strip_string, EOS required), for published numbers
        "acc_t1_boxed_exact": overall.get("acc_t1_boxed_exact"),
        "acc_final_boxed_exact": overall.get("acc_final_boxed_exact"),
    }


def build_summary(runs: dict[str, dict[str, dict]], protocol: dict, benchmark_sources: dict[str, str],
                  run_dirs: dict[str, dict[str, str]], limit: int = 0) -> dict:
    """summary.json: {"protocol", "benchmarks", "benchmark_sources", "limit", "models": [{"model",
    "benchmarks": {name: cell + "run_dir"}}]} from runs[model][benchmark] = metrics (models and
    benchmarks in run order); `limit` is the per-benchmark problem limit (0 = all)."""
    benchmarks = list(next(iter(runs.values())))
    return {
        "protocol": protocol, "benchmarks": benchmarks, "benchmark_sources": benchmark_sources, "limit": limit,
        "models": [{"model": model, "benchmarks": {name: {**summary_cell(metrics), "run_dir": run_dirs[model][name]}
                                                   for name, metrics in by_benchmark.items()}}
                   for model, by_benchmark in runs.items()],
    }


def _rate_with_ci(value: float | None, interval: dict | None) -> str:
    if value is None:
        return "n/a"
    return pct(value) if interval is None else f"{pct(value)} [{pct(interval['low'])}, {pct(interval['high'])}]"


def _summary_cells(cell: dict, keys: list[str]) -> list[str]:
    passed = cell["pass_at_k"]
    text = {"n": str(cell["n"]) + (f" x {cell['samples_per_problem']}" if cell["samples_per_problem"] > 1 else ""),
            "acc_t1": _rate_with_ci(cell["acc_t1"], cell["acc_t1_ci95"]),
            "acc_final": _rate_with_ci(cell["acc_final"], cell["acc_final_ci95"]),
            "pass_at_k": "-" if passed is None else f"{pct(passed['final'])} (k={passed['k']})",
            "acc_t1_boxed_exact": _rate_with_ci(cell.get("acc_t1_boxed_exact"), None),
            "acc_final_boxed_exact": _rate_with_ci(cell.get("acc_final_boxed_exact"), None)}
    return [text[key] for key in keys]


def _summary_columns(summary: dict, benchmark: str) -> list[tuple[str, str]]:
    cells = [entry["benchmarks"][benchmark] for entry in summary["models"]]
    shown = {"pass_at_k": any(cell["pass_at_k"] is not None for cell in cells),
             "acc_t1_boxed_exact": any(cell.get("acc_t1_boxed_exact") is not None for cell in cells),
             "acc_final_boxed_exact": any(cell.get("acc_final_boxed_exact") is not None for cell in cells)}
    return [(key, label) for key, label in SUMMARY_COLUMNS if shown.get(key, True)]


def summary_markdown(summary: dict) -> str:
    """summary.md: one row per model, one column group per benchmark, then the protocol per benchmark."""
    protocol, benchmarks = summary["protocol"], summary["benchmarks"]
    columns = {b: _summary_columns(summary, b) for b in benchmarks}
    header = "| Model | " + " | ".join(f"{b} {label}" for b in benchmarks for _, label in columns[b]) + " |"
    limit = f" (first {summary['limit']} problems of each benchmark)" if summary.get("limit") else ""
    lines = [f"# Benchmark suite: {protocol['title']}{limit}", "",
             "Accuracy in % with its 95% interval; with n x k samples per problem Acc@t1 / Acc@final are Avg@k "
             "and pass@k is the final attempt's. Acc@t1 = first attempt, Acc@final = final attempt.", "",
             header, "|" + " --- |" * (1 + sum(map(len, columns.values())))]
    for entry in summary["models"]:
        label = entry["model"] + ("" if not any(c["mode_label"] == "oracle (upper bound)"
                                                for c in entry["benchmarks"].values()) else " (oracle, upper bound)")
        cells = [cell for b in benchmarks for cell in _summary_cells(entry["benchmarks"][b], [k for k, _ in columns[b]])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Protocol", "", "| Benchmark | source | samples | temperature | top_p | max_new_tokens | "
              "in the paper |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for b in benchmarks:
        d = protocol["decoding"][b]
        decoding = "greedy" if d["temperature"] == 0 else str(d["temperature"])
        lines.append(f"| {b} | `{summary['benchmark_sources'][b]}` | {d['num_samples']} | {decoding} | "
                     f"{d['top_p'] if d['temperature'] else '-'} | {d['max_new_tokens']} | "
                     f"{'-' if d['in_paper'] is None else 'yes' if d['in_paper'] else 'no'} |")
    lines += ["", f"Correction mode: {protocol['correction_mode']}, "
              f"{attempts_phrase(protocol['correction_mode'], protocol['max_correction_turns'])}.", ""]
    lines += [f"- Source: {s}" for s in protocol["sources"]] + [f"- Note: {n}" for n in protocol["notes"]]
    return "\n".join(lines) + "\n"


def is_summary(payload: dict) -> bool:
    """Whether a loaded JSON file is a suite summary.json (rather than one run's metrics.json)."""
    return isinstance(payload, dict) and {"protocol", "benchmarks", "models"} <= set(payload)


def compare_summaries(named: list[tuple[str, dict]]) -> str:
    """comparison.md for suite summaries: per benchmark, each model row of each summary, Acc@t1 and
    Acc@final differenced against the first row, "beyond CIs" when the two 95% intervals do not overlap."""
    rows = [(f"{name}: {entry['model']}", entry) for name, summary in named for entry in summary["models"]]
    if len(rows) < 2:
        raise ValueError(f"a comparison needs at least 2 model rows, got {len(rows)}")
    benchmarks = [b for b in named[0][1]["benchmarks"] if all(b in s["benchmarks"] for _, s in named)]
    base_name, base = rows[0]
    lines = ["# Comparison of benchmark summaries", "",
             "| Benchmark | Metric | " + " | ".join(n for n, _ in rows) + " | "
             + " | ".join(f"{n} - {base_name}" for n, _ in rows[1:]) + " |",
             "|" + " --- |" * (2 + 2 * len(rows) - 1)]
    for b in benchmarks:
        for key, label in (("acc_t1", "Acc@t1"), ("acc_final", "Acc@final")):
            cells = [e["benchmarks"][b] for _, e in rows]
            diffs = []
            for cell in cells[1:]:
                if cell[key] is None or cells[0][key] is None:
                    diffs.append("n/a")
                    continue
                a, c = cells[0][f"{key}_ci95"], cell[f"{key}_ci95"]
                disjoint = a is not None and c is not None and (a["high"] < c["low"] or c["high"] < a["low"])
                diffs.append(pct(cell[key] - cells[0][key], signed=True)
                             + (" (beyond CIs)" if disjoint else " (within CIs)"))
            lines.append(f"| {b} | {label} | " + " | ".join(_rate_with_ci(c[key], c[f'{key}_ci95']) for c in cells)
                         + " | " + " | ".join(diffs) + " |")
    lines += ["", "Differences in percentage points; \"beyond CIs\" = the two 95% intervals do not overlap."]
    protocols = {s["protocol"]["name"] for _, s in named}
    if len(protocols) > 1:
        lines.append(f"- Warning: the summaries were run under different protocols: {sorted(protocols)}.")
    missing = sorted({b for _, s in named for b in s["benchmarks"]} - set(benchmarks))
    if missing:
        lines.append(f"- Benchmarks not in every summary, left out: {missing}.")
    return "\n".join(lines) + "\n"
