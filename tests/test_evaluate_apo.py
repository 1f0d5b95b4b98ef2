"""evaluate_apo end to end: a tiny saved policy for the fast runs (recomputation, resume, oracle,
several models, compare, bad input) and the embedded model on two problems (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import evaluate_apo as ea
from apo.config import A_PO_Config
from apo.errors import InputError
from conftest import REPO_ROOT, build_tiny_policy
from apo.metrics import metrics_from_generations
from apo.synthetic import generate_problems


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer) -> str:
    """A randomly initialised 2-layer Llama saved with the embedded tokenizer: a real --model folder."""
    folder = tmp_path_factory.mktemp("tiny_policy")
    build_tiny_policy(embedded_tokenizer).save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def eval_file(tmp_path) -> str:
    """Three synthetic problems; the third has a blank gold answer, so it must be reported as ungradable."""
    rows = generate_problems(3, seed=0, levels=(1, 2), types=("arithmetic", "fractions"))
    rows[2]["answer"] = ""
    return write_rows(tmp_path / "eval.jsonl", rows)


def tiny_run(model_dir: str, eval_file: str, output_dir, **overrides):
    """Evaluate with short generations; keyword arguments override A_PO_Config or EvalConfig fields."""
    model_settings = {k: overrides.pop(k) for k in list(overrides) if hasattr(A_PO_Config, k)}
    eval_settings = {**dict(eval_file=eval_file, output_dir=str(output_dir), eval_max_new_tokens=4, eval_batch_size=4,
                            bootstrap_resamples=200), **overrides}
    cfg = A_PO_Config(model=model_dir, max_correction_turns=2, generation_batch_size=4, **model_settings)
    return ea.main(cfg, ea.EvalConfig(**eval_settings))


def without_provenance(metrics: dict) -> dict:
    return json.loads(json.dumps({k: v for k, v in metrics.items() if k != "provenance"}))


def test_metrics_json_is_recomputed_exactly_from_generations(tiny_model_dir, eval_file, tmp_path):
    out = tmp_path / "run"
    returned = tiny_run(tiny_model_dir, eval_file, out)
    with open(out / "metrics.json") as handle:
        saved = json.load(handle)
    recomputed = metrics_from_generations(str(out / "generations.jsonl"), **saved["metric_settings"])
    assert without_provenance(saved) == json.loads(json.dumps(recomputed))
    assert without_provenance(returned) == without_provenance(saved)
    # the random policy never writes a parseable verdict, so every attempt is revised: 4 turns per episode
    with open(out / "generations.jsonl") as handle:
        records = [json.loads(line) for line in handle]
    assert len(records) == 3 * 4 and {r["role"] for r in records} == {"attempt", "verify", "revise"}
    assert saved["ungradable"] == {"count": 1, "ids": ["synthetic/arithmetic/2"]}
    assert saved["overall"]["num_graded"] == 2 and saved["overall"]["truncation_rate"] == 1.0
    assert saved["provenance"]["model"]["weights_fingerprint"] and saved["provenance"]["eval_file"]["sha256"]
    results = (out / "results.md").read_text()
    assert "| Accuracy (%) |" in results and results.index("First Attempt") < results.index("By MATH type")
    for png in ("accuracy_by_level.png", "accuracy_by_type.png", "transitions.png"):
        assert (out / png).stat().st_size > 1000


def test_sampled_run_reports_mean_maj_and_pass_at_k(tiny_model_dir, eval_file, tmp_path):
    out = tmp_path / "sampled"
    metrics = tiny_run(tiny_model_dir, eval_file, out, limit=2, num_samples=2, eval_temperature=0.6, pass_k=[1, 2],
                       correction_mode="none")
    assert metrics["samples_per_problem"] == 2 and set(metrics["overall"]["sampled"]["pass_at_k_final"]) == {"1", "2"}
    assert metrics["overall"]["ci95"]["acc_t1"]["method"].startswith("bootstrap")
    saved = json.loads((out / "metrics.json").read_text())
    recomputed = metrics_from_generations(str(out / "generations.jsonl"), **saved["metric_settings"])
    assert without_provenance(saved) == json.loads(json.dumps(recomputed))
    assert "## Sampled metrics" in (out / "results.md").read_text()


def test_resume_after_an_interrupted_write_matches_an_uninterrupted_run(tiny_model_dir, eval_file, tmp_path):
    out = tmp_path / "resume"
    tiny_run(tiny_model_dir, eval_file, out, eval_batch_size=1)  # one episode per appended chunk
    generations = out / "generations.jsonl"
    complete = generations.read_text()
    lines = complete.splitlines(keepends=True)
    # keep the first episode (4 turns), one turn of the second and half a line of the next
    generations.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    metrics = tiny_run(tiny_model_dir, eval_file, out, eval_batch_size=1)
    assert generations.read_text() == complete
    saved = json.loads((out / "metrics.json").read_text())
    assert without_provenance(metrics) == without_provenance(saved)
    with pytest.raises(ValueError, match="settings differ .*max_new_tokens"):
        tiny_run(tiny_model_dir, eval_file, out, eval_batch_size=1, eval_max_new_tokens=7)
    with pytest.raises(ValueError, match="pass --resume true"):
        tiny_run(tiny_model_dir, eval_file, out, eval_batch_size=1, resume=False)
    with pytest.raises(ValueError, match="a smaller --limit"):
        tiny_run(tiny_model_dir, eval_file, out, eval_batch_size=1, limit=1)


def test_oracle_runs_are_labelled_an_upper_bound(tiny_model_dir, eval_file, tmp_path):
    metrics = tiny_run(tiny_model_dir, eval_file, tmp_path / "o", limit=2, correction_mode="oracle")
    folder = tmp_path / "o" / "oracle_upper_bound"
    assert metrics["mode_label"] == "oracle (upper bound)" and (folder / "metrics.json").is_file()
    assert "oracle (upper bound)" in (folder / "results.md").read_text().splitlines()[0]
    assert metrics["overall"]["verifier"]["num_verifications"] == 0


def test_several_models_then_compare(tiny_model_dir, embedded_tokenizer, eval_file, tmp_path):
    other = tmp_path / "other_policy"
    build_tiny_policy(embedded_tokenizer, seed=1).save_pretrained(other)
    embedded_tokenizer.save_pretrained(other)
    out = tmp_path / "many"
    tiny_run(tiny_model_dir, eval_file, out, limit=2, correction_mode="none", models=[str(other)])
    first, second = ea.model_slug(tiny_model_dir), ea.model_slug(str(other))
    assert (out / first / "metrics.json").is_file() and (out / second / "metrics.json").is_file()
    table = (out / "comparison.md").read_text()
    assert "Acc@final (final attempt)" in table and "(within CIs)" in table
    compared = ea.main(A_PO_Config(), ea.EvalConfig(
        compare=[str(out / first / "metrics.json"), str(out / second / "metrics.json")], output_dir=str(tmp_path / "c")))
    assert compared["markdown"] == (tmp_path / "c" / "comparison.md").read_text()
    with pytest.raises(FileNotFoundError, match="--compare"):
        ea.main(A_PO_Config(), ea.EvalConfig(compare=[str(tmp_path / "missing.json"), str(out / first / "metrics.json")]))


# --- inputs that cannot crash (issue 19) ---

def test_math500_rows_as_distributed_are_evaluated(tiny_model_dir, tmp_path):
    """Issue 13: evaluate_apo rejected MATH's own "level": "Level 3" (and rows with only `unique_id`)."""
    rows = generate_problems(2, seed=0, levels=(1,), types=("arithmetic",))
    for row in rows:
        row["unique_id"], row["level"] = row.pop("id"), f"Level {row['level']}"
    metrics = tiny_run(tiny_model_dir, write_rows(tmp_path / "math.jsonl", rows), tmp_path / "out",
                       correction_mode="none")
    assert metrics["num_problems"] == 2 and set(metrics["by_level"]) == {"1"}


def test_bad_eval_files_and_output_folders_are_refused_before_the_model_loads(tmp_path):
    """Issue 19: a non-UTF-8 byte was a bare UnicodeDecodeError; --output_dir naming a file a raw FileExistsError."""
    rows = generate_problems(2, seed=0, levels=(1,), types=("arithmetic",))
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(rows[0]).encode() + b"\n" + json.dumps(rows[1]).replace("What", "Wh\xe4t").encode(
        "latin-1") + b"\n")
    model = str(tmp_path / "no-such-model")  # reading the rows comes first: loading this would fail differently
    with pytest.raises(InputError, match=r"latin1.jsonl:2: not valid JSON \(not UTF-8: byte 0xe4"):
        tiny_run(model, str(path), tmp_path / "out")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(InputError, match=r"empty.jsonl: no problem rows"):
        tiny_run(model, str(tmp_path / "empty.jsonl"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(InputError, match=r"--output_dir .*taken: is a file"):
        tiny_run(model, write_rows(tmp_path / "ok.jsonl", rows), tmp_path / "taken")


def test_a_problem_longer_than_the_context_is_refused_or_skipped_and_listed(tiny_model_dir, tmp_path):
    """Issue 19: a 5 MB problem was sent to the model, which tried to allocate 36 GB and died. The tiny model's
    context is 2048 tokens, so 40,000 characters stand in for the 5 MB."""
    rows = generate_problems(3, seed=0, levels=(1,), types=("arithmetic",))
    rows[1]["problem"] = "What is " + " + ".join(["1"] * 10_000) + "?"
    eval_file = write_rows(tmp_path / "eval.jsonl", rows)
    with pytest.raises(InputError, match=r"1 problems of .*eval.jsonl have a first prompt longer than 2044 tokens "
                                         r"\(context window 2048 - eval_max_new_tokens 4\): synthetic/arithmetic/1 "
                                         r"\(\d+ tokens\); .*--skip_long_prompts true"):
        tiny_run(tiny_model_dir, eval_file, tmp_path / "refused", correction_mode="none")
    assert not (tmp_path / "refused" / "generations.jsonl").exists()
    metrics = tiny_run(tiny_model_dir, eval_file, tmp_path / "skipped", correction_mode="none",
                       skip_long_prompts=True)
    skipped = metrics["provenance"]["skipped_long_prompts"]
    assert metrics["num_problems"] == 2 and skipped["count"] == 1 and skipped["ids"] == ["synthetic/arithmetic/1"]
    assert "(--skip_long_prompts; not in any rate): 1 (synthetic/arithmetic/1)" in (
        tmp_path / "skipped" / "results.md").read_text()


def test_unknown_model_is_a_clear_error(eval_file, tmp_path, monkeypatch):
    from huggingface_hub import constants
    from apo.models import ModelNotAvailableError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotAvailableError, match="no-such-org/no-such-model"):
        tiny_run("no-such-org/no-such-model", eval_file, tmp_path / "unknown")
    assert not (tmp_path / "unknown").exists()


def test_eval_config_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="EvalConfig.pass_k"):
        ea.EvalConfig(num_samples=2, eval_temperature=0.6, pass_k=[4])
    with pytest.raises(ValueError, match="EvalConfig.num_samples=4 is invalid: greedy"):
        ea.EvalConfig(num_samples=4)


def test_help_exits_zero():
    done = subprocess.run([sys.executable, "evaluate_apo.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--eval_max_new_tokens" in done.stdout and "--compare" in done.stdout


@pytest.mark.slow
def test_embedded_model_end_to_end(tmp_path):
    rows = generate_problems(2, seed=0, levels=(1,), types=("arithmetic",))
    path = write_rows(tmp_path / "eval.jsonl", rows)
    metrics = ea.main(A_PO_Config(model="embedded", max_correction_turns=2),
                      ea.EvalConfig(eval_file=path, output_dir=str(tmp_path / "run"), eval_max_new_tokens=24,
                                    eval_batch_size=2, bootstrap_resamples=200))
    assert metrics["num_problems"] == 2 and metrics["overall"]["num_graded"] == 2
    assert metrics["provenance"]["model"]["weight_files"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    recomputed = metrics_from_generations(str(tmp_path / "run" / "generations.jsonl"), **saved["metric_settings"])
    assert without_provenance(saved) == json.loads(json.dumps(recomputed))


def test_comparison_flags_differences_beyond_the_intervals():
    from apo.metrics import compute_metrics
    from apo.report import comparison_markdown
    from test_metrics import complete, rec

    def run(correct: bool) -> dict:
        return compute_metrics(complete([rec(f"p{i}", 0, "attempt", correct=correct, answer="5") for i in range(10)]),
                               bootstrap_resamples=200)

    table = comparison_markdown([("base", run(False)), ("trained", run(True))])
    # 0/10 vs 10/10: Wilson intervals [0, 27.8] and [72.2, 100] do not overlap
    assert "| Acc@final (final attempt) | 0.0 | 100.0 | +100.0 (beyond CIs) |" in table
    assert "| Improvement (final - first) | 0.0 | 0.0 | +0.0 (within CIs) |" in table
    with pytest.raises(ValueError, match="at least 2 runs"):
        comparison_markdown([("base", run(False))])
