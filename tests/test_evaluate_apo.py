"""evaluate_apo end to end: a tiny saved policy for the fast runs (recomputation, resume, oracle,
several models, compare, bad input) and the embedded model on two problems (slow)."""

from __future__ import annotations

import json
import os
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
    # the random policy never writes a parseable verdict, so every attempt is revised, and the revision
    # (the last of 2 attempts) is not verified, as in PAG: 3 turns per episode
    with open(out / "generations.jsonl") as handle:
        records = [json.loads(line) for line in handle]
    assert len(records) == 3 * 3 and [r["role"] for r in records[:3]] == ["attempt", "verify", "revise"]
    # the official A*-PO rule beside the project's grader, on every attempt (null where ungradable)
    assert all(r["correct_boxed_exact"] in (False, None) for r in records if r["role"] != "verify")
    assert saved["overall"]["acc_t1_boxed_exact"] == 0.0 and saved["overall"]["acc_final_boxed_exact"] == 0.0
    assert saved["provenance"]["prompts"]["format"] == "chat"
    assert saved["provenance"]["episode"] == {"verify_final_attempt": False, "verdict_parse": "pag"}
    assert saved["ungradable"] == {"count": 1, "ids": ["synthetic/arithmetic/2"]}
    assert saved["overall"]["num_graded"] == 2 and saved["overall"]["truncation_rate"] == 1.0
    assert saved["provenance"]["model"]["weights_fingerprint"] and saved["provenance"]["eval_file"]["sha256"]
    results = (out / "results.md").read_text()
    assert "| Accuracy (%) |" in results and results.index("First Attempt") < results.index("By MATH type")
    assert "| Accuracy, official A*-PO rule (%) | 0.0 | 0.0 |" in results
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
    # keep the first episode (3 turns), one turn of the second and half a line of the next
    generations.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])
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
    assert "--benchmarks" in done.stdout and "{custom,apo,pag}" in done.stdout


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


def test_raw_prompt_format_reaches_evaluation(tiny_model_dir, eval_file, tmp_path, embedded_tokenizer):
    from apo.prompts import encode_problem

    out = tmp_path / "raw"
    metrics = tiny_run(tiny_model_dir, eval_file, out, limit=2, prompt_format="raw", correction_mode="none")
    rows = [json.loads(line) for line in open(eval_file)][:2]
    records = [json.loads(line) for line in open(out / "generations.jsonl")]
    assert [r["prompt_tokens"] for r in records] == [
        len(encode_problem(embedded_tokenizer, row["problem"], "raw", "")) for row in rows]
    assert metrics["provenance"]["prompts"]["format"] == "raw"
    with pytest.raises(ValueError, match="settings differ .*prompt_format"):
        tiny_run(tiny_model_dir, eval_file, out, limit=2, correction_mode="none")


def test_a_trained_folder_is_evaluated_in_its_prompt_format(tiny_model_dir, eval_file, tmp_path):
    import shutil

    trained = tmp_path / "trained_raw"
    shutil.copytree(tiny_model_dir, trained)
    (trained / "run_config.json").write_text(json.dumps({"prompt_format": "raw"}))
    metrics = tiny_run(str(trained), eval_file, tmp_path / "default_eval", limit=1)  # the folder sets raw itself
    assert metrics["provenance"]["prompts"]["format"] == "raw"
    assert metrics["provenance"]["config"]["correction_mode"] == "none"
    with pytest.raises(InputError, match="prompt_format='raw'.*--prompt_format raw --correction_mode none"):
        tiny_run(str(trained), eval_file, tmp_path / "oracle_eval", limit=1, correction_mode="oracle")
    chat = tmp_path / "trained_chat"
    shutil.copytree(tiny_model_dir, chat)
    (chat / "run_config.json").write_text(json.dumps({"prompt_format": "chat"}))
    with pytest.raises(InputError, match="prompt_format='chat'.*--prompt_format chat"):
        tiny_run(str(chat), eval_file, tmp_path / "raw_eval", limit=1, prompt_format="raw", correction_mode="none")


# --- the benchmark suite ---

SUITE = ["math500", "minerva_math", "olympiadbench", "amc23", "aime24", "gsm8k"]


@pytest.fixture
def benchmark_dir(tmp_path) -> tuple[str, str]:
    """A benchmark folder of 3 rows per benchmark in the shared schema (synthetic problems, so the tiny
    policy's runs stay short) and a MATH-500 file in PRM800K's schema."""
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    for name in SUITE[1:]:
        rows = generate_problems(3, seed=1, levels=(1,), types=("arithmetic",))
        write_rows(folder / f"{name}.jsonl", [{"id": f"{name}/{i}", "problem": r["problem"], "answer": r["answer"],
                                               "source": name} for i, r in enumerate(rows)])
    rows = generate_problems(3, seed=2, levels=(1, 2), types=("arithmetic",))
    math500 = write_rows(tmp_path / "test500.jsonl", [
        {"unique_id": f"test/x/{i}.json", "problem": r["problem"], "answer": r["answer"], "solution": "",
         "type": "Algebra", "level": f"Level {r['level']}"} for i, r in enumerate(rows)])
    return str(folder), math500


def suite_run(model_dir, benchmark_dir, output_dir, **overrides):
    folder, math500 = benchmark_dir
    return tiny_run(model_dir, "unused.jsonl", output_dir, benchmark_dir=folder, math500_file=math500, **overrides)


def test_suite_writes_one_run_per_benchmark_and_a_summary(tiny_model_dir, benchmark_dir, tmp_path):
    out = tmp_path / "suite"
    summary = suite_run(tiny_model_dir, benchmark_dir, out, benchmarks=SUITE, limit=2, correction_mode="none")
    for name in SUITE:
        assert (out / name / "metrics.json").is_file() and (out / name / "results.md").is_file()
        assert (out / name / "accuracy_by_level.png").is_file()
        # the suite runs the single-file path: its metrics recompute from its generations
        saved = json.loads((out / name / "metrics.json").read_text())
        assert saved["num_problems"] == 2
        recomputed = metrics_from_generations(str(out / name / "generations.jsonl"), **saved["metric_settings"])
        assert without_provenance(saved) == json.loads(json.dumps(recomputed))
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["benchmarks"] == SUITE and on_disk["protocol"]["name"] == "custom" and on_disk["limit"] == 2
    assert (on_disk["protocol"]["correction_mode"], on_disk["protocol"]["max_correction_turns"]) == ("none", 2)
    cells = on_disk["models"][0]["benchmarks"]
    assert set(cells) == set(SUITE)
    for name, cell in cells.items():
        assert cell["n"] == 2 and cell["acc_t1_ci95"]["method"] == "wilson" and cell["acc_final_ci95"]["high"] > 0
        assert cell["pass_at_k"] is None
        # the official A*-PO rule beside the project's grader, from the same run's metrics.json
        overall = json.loads((out / name / "metrics.json").read_text())["overall"]
        assert cell["acc_t1_boxed_exact"] == overall["acc_t1_boxed_exact"]
        assert 0.0 <= cell["acc_final_boxed_exact"] <= 1.0
    table = (out / "summary.md").read_text()
    assert table.count("\n| " + tiny_model_dir) == 1 and "math500 Acc@t1" in table
    assert "math500 strict t1" in table and "math500 strict final" in table
    assert "math500 pass@k" not in table  # greedy: no benchmark was sampled
    assert benchmark_dir[1] in table  # where math500 came from


def test_suite_resumes_per_benchmark(tiny_model_dir, benchmark_dir, tmp_path, monkeypatch):
    out = tmp_path / "resume_suite"
    suite_run(tiny_model_dir, benchmark_dir, out, benchmarks=["amc23", "gsm8k"], limit=2, correction_mode="none")
    kept = (out / "amc23" / "generations.jsonl").read_text()
    (out / "gsm8k" / "generations.jsonl").write_text("")  # gsm8k must be generated again, amc23 not
    generated = []
    original = ea.generate_and_grade
    monkeypatch.setattr(ea, "generate_and_grade", lambda cfg, eval_cfg, todo, *a, **k: (
        generated.append(eval_cfg.eval_file), original(cfg, eval_cfg, todo, *a, **k))[1])
    suite_run(tiny_model_dir, benchmark_dir, out, benchmarks=["amc23", "gsm8k"], limit=2, correction_mode="none")
    assert [path.endswith("gsm8k.jsonl") for path in generated] == [True]
    assert (out / "amc23" / "generations.jsonl").read_text() == kept


def test_suite_several_models_one_row_each_and_compare_summaries(tiny_model_dir, embedded_tokenizer, benchmark_dir,
                                                                tmp_path):
    other = tmp_path / "other_policy"
    build_tiny_policy(embedded_tokenizer, seed=1).save_pretrained(other)
    embedded_tokenizer.save_pretrained(other)
    out = tmp_path / "two"
    summary = suite_run(tiny_model_dir, benchmark_dir, out, benchmarks=["aime24", "math500"], limit=2,
                        correction_mode="none", models=[str(other)])
    assert [m["model"] for m in summary["models"]] == [tiny_model_dir, str(other)]
    assert (out / ea.model_slug(str(other)) / "aime24" / "metrics.json").is_file()
    table = (out / "summary.md").read_text()
    assert "| " + tiny_model_dir + " |" in table and "| " + str(other) + " |" in table
    single = tmp_path / "single"
    suite_run(tiny_model_dir, benchmark_dir, single, benchmarks=["aime24", "math500"], limit=2, correction_mode="none")
    compared = ea.main(A_PO_Config(), ea.EvalConfig(compare=[str(single / "summary.json"), str(out / "summary.json")],
                                                    output_dir=str(tmp_path / "cmp")))
    assert "| aime24 | Acc@t1 |" in compared["markdown"] and "(within CIs)" in compared["markdown"]
    with pytest.raises(ValueError, match="only metrics.json files or only summary.json"):
        ea.main(A_PO_Config(), ea.EvalConfig(compare=[str(single / "summary.json"),
                                                      str(single / "aime24" / "metrics.json")]))


def test_suite_protocol_sets_decoding_per_benchmark_and_is_written_down(benchmark_dir, tmp_path, monkeypatch):
    """--protocol apo: what each benchmark's run is given (generation replaced by fake records)."""
    from apo.metrics import compute_metrics
    from test_metrics import complete, rec

    given = {}

    def fake_evaluate_model(cfg, eval_cfg, rows, run_dir):
        given[os.path.basename(run_dir)] = (cfg, eval_cfg)
        records = [rec(row["id"], 0, "attempt", sample=s, correct=s % 2 == 0, answer="5", mode=cfg.correction_mode)
                   for row in rows for s in range(eval_cfg.num_samples)]
        return compute_metrics(complete(records), pass_k=tuple(eval_cfg.pass_k), bootstrap_resamples=200)

    monkeypatch.setattr(ea, "evaluate_model", fake_evaluate_model)
    folder, math500 = benchmark_dir
    summary = ea.main(A_PO_Config(model="any"), ea.EvalConfig(protocol="apo", benchmarks=["amc23", "gsm8k"], limit=2,
                                                              benchmark_dir=folder, math500_file=math500,
                                                              output_dir=str(tmp_path / "apo")))
    amc_cfg, amc = given["amc23"]
    gsm_cfg, gsm = given["gsm8k"]
    assert (amc.num_samples, amc.eval_temperature, amc.eval_top_p, amc.eval_max_new_tokens) == (32, 1.0, 1.0, 1024)
    assert (gsm.num_samples, gsm.eval_temperature, gsm.eval_max_new_tokens) == (1, 0.0, 1024)
    assert amc_cfg.correction_mode == gsm_cfg.correction_mode == "none" and amc_cfg.max_correction_turns == 1
    assert amc_cfg.prompt_format == gsm_cfg.prompt_format == "raw"  # the paper's raw text, no chat template
    assert summary["protocol"]["prompt_format"] == "raw"
    decoding = summary["protocol"]["decoding"]
    assert decoding["amc23"]["in_paper"] and not decoding["gsm8k"]["in_paper"]
    amc_cell = summary["models"][0]["benchmarks"]["amc23"]
    # Avg@32 = Acc@t1 over the 32 samples (half right); pass@32 = 1 since each problem has a right sample
    assert amc_cell["acc_t1"] == 0.5 and amc_cell["pass_at_k"] == {"k": 32, "t1": 1.0, "final": 1.0}
    assert amc_cell["acc_t1_ci95"]["method"].startswith("bootstrap")
    table = (tmp_path / "apo" / "summary.md").read_text()
    assert "A*-PO" in table and "| amc23 | " in table and "(k=32)" in table and "2 x 32" in table
    assert "amc23 pass@k" in table and "gsm8k pass@k" not in table
    pag = ea.main(A_PO_Config(model="any"), ea.EvalConfig(protocol="pag", limit=1, benchmark_dir=folder,
                                                          math500_file=math500, output_dir=str(tmp_path / "pag")))
    assert pag["benchmarks"] == ["math500", "minerva_math", "aime24"]
    assert {given[b][1].eval_temperature for b in pag["benchmarks"]} == {0.6}
    assert {given[b][1].eval_max_new_tokens for b in pag["benchmarks"]} == {2028}  # PAG's evaluation.sh
    assert given["aime24"][0].correction_mode == "self_verify" and given["aime24"][0].prompt_format == "chat"


def test_suite_from_the_hub_fingerprints_a_copy_of_the_rows(tmp_path, monkeypatch):
    import datasets
    from apo.metrics import compute_metrics
    from test_metrics import complete, rec

    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None, split=None: [
        {"question": f"q{i}", "answer": f"Step.\n#### {i},000"} for i in range(3)])
    given = {}

    def fake_evaluate_model(cfg, eval_cfg, rows, run_dir):
        given["eval_file"], given["rows"] = eval_cfg.eval_file, rows
        return compute_metrics(complete([rec(r["id"], 0, "attempt", correct=True, answer="1", mode=cfg.correction_mode)
                                         for r in rows]), bootstrap_resamples=200)

    monkeypatch.setattr(ea, "evaluate_model", fake_evaluate_model)
    summary = ea.main(A_PO_Config(model="any"), ea.EvalConfig(benchmarks=["gsm8k"], benchmark_source="hub", limit=2,
                                                              output_dir=str(tmp_path / "hub")))
    copy = tmp_path / "hub" / "hub_benchmarks" / "gsm8k.jsonl"
    assert given["eval_file"] == str(copy) and [json.loads(line) for line in copy.read_text().splitlines()] == given["rows"]
    assert [r["answer"] for r in given["rows"]] == ["0000", "1000"]
    assert summary["benchmark_sources"]["gsm8k"] == "hub:openai/gsm8k[main, test]"


def test_protocol_refuses_flags_it_would_override():
    with pytest.raises(ValueError, match="protocol='pag' sets the decoding.*--eval_temperature"):
        ea.EvalConfig(protocol="pag", eval_temperature=0.3)
    with pytest.raises(ValueError, match="--protocol apo sets correction_mode"):
        ea.suite_protocol(A_PO_Config(correction_mode="oracle"), ea.EvalConfig(protocol="apo"))
    assert ea.suite_protocol(A_PO_Config(), ea.EvalConfig(protocol="pag")).decoding("aime24").num_samples == 32
    raw = A_PO_Config(prompt_format="raw", correction_mode="none")
    assert ea.suite_protocol(raw, ea.EvalConfig(protocol="apo")).prompt_format == "raw"  # the page's command
    with pytest.raises(ValueError, match="--protocol pag sets correction_mode"):
        ea.suite_protocol(raw, ea.EvalConfig(protocol="pag"))
    with pytest.raises(ValueError, match="unknown benchmark.*'aime25'"):
        ea.EvalConfig(benchmarks=["aime25"])


def test_missing_benchmark_names_the_file_it_looked_for(tiny_model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'olympiadbench': file '.*empty_dir/olympiadbench.jsonl' not found"):
        tiny_run(tiny_model_dir, "unused.jsonl", tmp_path / "out", benchmarks=["olympiadbench"],
                 benchmark_dir=str(tmp_path / "empty_dir"))
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_embedded_model_runs_the_whole_suite(tmp_path):
    """The six benchmarks of the shipped benchmark_data (the default), 4 problems each, on the embedded model."""
    summary = ea.main(A_PO_Config(model="embedded", max_correction_turns=2),
                      ea.EvalConfig(benchmarks=SUITE, limit=4, output_dir=str(tmp_path / "suite"),
                                    eval_max_new_tokens=24, eval_batch_size=4, bootstrap_resamples=200))
    saved = json.loads((tmp_path / "suite" / "summary.json").read_text())
    assert saved["benchmarks"] == SUITE and len(saved["models"]) == 1
    for name in SUITE:
        cell = saved["models"][0]["benchmarks"][name]
        assert cell["n"] == 4 and cell["acc_t1_ci95"] and cell["acc_final_ci95"]
    assert summary["benchmark_sources"]["gsm8k"].endswith("gsm8k.jsonl")


# --- issue 28 ---

def test_a_resume_refuses_rows_that_changed_naming_the_file_and_the_first_differing_id(tiny_model_dir, tmp_path):
    """Issue 28: the eval file's content decides a resume, named down to the first differing id; a larger
    --limit still continues a run whose rows are unchanged."""
    rows = generate_problems(3, seed=0, levels=(1,), types=("arithmetic",))
    path = write_rows(tmp_path / "eval.jsonl", rows)
    out = tmp_path / "run"
    tiny_run(tiny_model_dir, path, out, limit=2)
    assert tiny_run(tiny_model_dir, path, out, limit=3)["num_problems"] == 3
    rows[1]["answer"] = "-99"
    write_rows(tmp_path / "eval.jsonl", rows)
    with pytest.raises(InputError, match=rf"{path}: row 2 \(id {rows[1]['id']}\) differs .*cannot resume"):
        tiny_run(tiny_model_dir, path, out, limit=3)


def test_sigterm_says_what_was_kept_and_how_to_resume(tiny_model_dir, tmp_path):
    """Issue 28: SIGTERM ended evaluate_apo.py with status 143 and not a word (the finished chunks were kept)."""
    import signal
    import time

    rows = generate_problems(200, seed=0, levels=(1,), types=("arithmetic",))
    path = write_rows(tmp_path / "eval.jsonl", rows)
    out = tmp_path / "run"
    command = [sys.executable, "evaluate_apo.py", "--model", tiny_model_dir, "--eval_file", path, "--output_dir",
               str(out), "--eval_batch_size", "1", "--eval_max_new_tokens", "16", "--max_correction_turns", "1"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    generations = out / "generations.jsonl"
    while process.poll() is None and not (generations.exists() and generations.stat().st_size > 0):
        time.sleep(0.2)  # until the first chunk is written
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM
    kept = len({json.loads(line)["id"] for line in generations.read_text().splitlines() if line.endswith("}")})
    assert f"evaluate_apo.py: stopped by SIGTERM; {generations} keeps {kept} of 200 episodes" in err
    assert "Run the same command again to continue from there (--resume true, the default)." in err
    assert 1 <= kept < 200 and "Traceback" not in err


def test_results_md_says_first_attempt_only_under_correction_mode_none(tiny_model_dir, eval_file, tmp_path):
    """Issue 28: results.md said 'up to 2 attempts' of a run that never revises."""
    tiny_run(tiny_model_dir, eval_file, tmp_path / "none", limit=1, correction_mode="none")
    results = (tmp_path / "none" / "results.md").read_text()
    assert "first attempt only" in results and "up to 2 attempts" not in results
    tiny_run(tiny_model_dir, eval_file, tmp_path / "verify", limit=1)
    assert "up to 2 attempts" in (tmp_path / "verify" / "results.md").read_text()
