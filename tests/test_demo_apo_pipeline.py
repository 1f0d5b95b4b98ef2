"""Tests of the demo (demo_apo_pipeline.py): its configuration, the statistics of its verdict,
its output folder rules, and end-to-end --quick runs (a tiny random Llama in seconds; the
embedded SmolLM2 marked slow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

import demo_apo_pipeline as demo
from apo.config import REVISE_PROMPT, SYSTEM_PROMPT, VERIFY_PROMPT, parse_config
from apo.metrics import sign_test_p
from apo.synthetic import ARITHMETIC_WORDINGS
from conftest import REPO_ROOT, build_tiny_policy


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, embedded_tokenizer):
    folder = tmp_path_factory.mktemp("tiny_policy")
    build_tiny_policy(embedded_tokenizer, seed=0).save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    return folder


# --- configuration ---

def test_help_exits_zero():
    result = subprocess.run([sys.executable, "demo_apo_pipeline.py", "--help"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout and "--policy_loss" in result.stdout


def test_quick_replaces_only_the_sizes_left_at_their_default():
    (cfg,) = parse_config((demo.DemoConfig,), ["--quick", "--stage2_steps", "5"])
    assert cfg.stage2_steps == 5                      # set on the command line: kept
    assert cfg.train_prompts == demo.QUICK_SIZES["train_prompts"]
    assert cfg.max_new_tokens == demo.QUICK_SIZES["max_new_tokens"]
    (full,) = parse_config((demo.DemoConfig,), [])
    assert full.train_prompts == 64 and full.stage2_steps == 24 and full.eval_problems == 128


@pytest.mark.parametrize("flags, field", [(["--prompts_per_step", "5"], "prompts_per_step"),
                                          (["--train_prompts", "0"], "train_prompts"),
                                          (["--source", "local"], "source")])
def test_invalid_settings_name_the_field(flags, field):
    with pytest.raises(ValueError, match=field):
        parse_config((demo.DemoConfig,), flags)


# --- the verdict's statistics ---

def test_format_p_never_prints_zero():
    assert demo.format_p(sign_test_p(0, 6)) == "p = 0.031"
    assert demo.format_p(sign_test_p(17, 1)) == "p < 0.001"     # 2 * 19 / 2^18 = 0.00014


def _attempt(problem_id, correct, text):
    return {"id": problem_id, "role": "attempt", "attempt_index": 0, "correct": correct, "text": text}


def test_paired_changes_and_verdict():
    before = {i: _attempt(i, ok, "so 3") for i, ok in zip("abcdefgh", [1, 0, 0, 0, 0, 0, 0, 1])}
    after = {i: _attempt(i, ok, "\\boxed{3}") for i, ok in zip("abcdefgh", [1, 1, 1, 1, 1, 1, 1, 0])}
    changes = demo.paired_changes(before, after)
    assert changes == {"problems": 8, "gained": 6, "lost": 1, "p_value": pytest.approx(0.125), "before_correct": 2,
                       "after_correct": 7}
    boxed = demo.boxed_summary(before, after)
    assert boxed["before"] == (0, 8) and boxed["after"] == (8, 8)
    effect, text = demo.effect_verdict(changes, boxed)    # accuracy alone is p = 0.125; the format moved
    assert effect and "boxed" in text
    effect, text = demo.effect_verdict(changes, demo.boxed_summary(before, before))
    assert not effect and "NO held-out effect" in text


def test_one_right_v_star_matches_the_reference_numbers():
    # docs: with 1 of 8 right V* = 0.2935; 2 of 8 (the same ratio as 1 of 4) gives 0.4772
    assert demo.one_right_v_star(8) == pytest.approx(0.2935, abs=1e-4)
    assert demo.one_right_v_star(4) == pytest.approx(0.4772, abs=1e-4)


def test_step4_explains_the_loss_the_run_uses():
    (apo,) = parse_config((demo.DemoConfig,), ["--beta2", "0.25", "--policy_learning_rate", "2e-4"])
    text = demo.stage2_explanation(apo)
    assert "regresses beta2 * log(pi(y|x) / pi_ref(y|x))" in text and "beta2 0.25" in text and "2e-04" not in text
    assert "learning rate 0.0002" in text and "advantage-weighted" not in text
    (awr,) = parse_config((demo.DemoConfig,), ["--policy_loss", "awr"])
    text = demo.stage2_explanation(awr)
    assert "advantage-weighted LM loss" in text and "regresses" not in text and "mean squared error" not in text
    assert demo.STAGE2_KIND["awr"] != demo.STAGE2_KIND["apo"]


@pytest.mark.parametrize("flags, expected", [([], False), (["--filter_all_incorrect", "true"], True)])
def test_the_prompt_filter_reaches_the_trainer(flags, expected):
    (cfg,) = parse_config((demo.DemoConfig,), flags)
    assert demo.algorithm_config(cfg, cfg.model).filter_all_incorrect is expected


def test_the_system_prompt_reaches_training_and_evaluation_alike():
    (default,) = parse_config((demo.DemoConfig,), [])
    assert demo.algorithm_config(default, default.model).system_prompt == demo.DEMO_SYSTEM_PROMPT != SYSTEM_PROMPT
    (cfg,) = parse_config((demo.DemoConfig,), ["--system_prompt", "Answer in one sentence."])
    assert demo.algorithm_config(cfg, cfg.model).system_prompt == "Answer in one sentence."
    assert demo.algorithm_config(cfg, "/tmp/trained/final").system_prompt == "Answer in one sentence."



def test_correction_settings_reach_the_trainer():
    (default,) = parse_config((demo.DemoConfig,), [])
    apo = demo.algorithm_config(default, default.model)
    assert apo.train_correction is False and apo.verify_prompt == demo.DEMO_VERIFY_PROMPT != VERIFY_PROMPT
    assert apo.revise_prompt == REVISE_PROMPT  # the revise turn is not trained: PAG's prompt
    (cfg,) = parse_config((demo.DemoConfig,), ["--train_correction"])
    apo = demo.algorithm_config(cfg, cfg.model)
    assert (apo.train_correction, apo.verify_reward, apo.correction_mode) == (True, "match", "self_verify")
    assert apo.revise_prompt == demo.DEMO_REVISE_PROMPT != REVISE_PROMPT
    assert demo.algorithm_config(cfg, "/tmp/trained/final").revise_prompt == demo.DEMO_REVISE_PROMPT
    turns = demo.correction_config(cfg)
    assert turns.normalize_turn_advantages is False and turns.turn_baseline == "running_mean"
    assert turns.balance_verify_truth and turns.counterfactual_verdicts
    (outcome,) = parse_config((demo.DemoConfig,), ["--train_correction", "--verify_reward", "outcome"])
    assert demo.algorithm_config(outcome, outcome.model).verify_reward == "outcome"
    (chosen,) = parse_config((demo.DemoConfig,), ["--train_correction", "--revise_prompt", "Try again."])
    assert demo.algorithm_config(chosen, chosen.model).revise_prompt == "Try again."
    assert not demo.correction_config(outcome).counterfactual_verdicts  # a verdict not said has no known outcome
    assert "revises it" in demo.stage2_explanation(cfg) and "revises it" not in demo.stage2_explanation(default)


# --- carry-over to wordings never trained on ---

def test_default_holds_out_one_wording_of_each_family_from_training():
    (cfg,) = parse_config((demo.DemoConfig,), [])
    data_cfg = demo.data_config(cfg, "data")
    heldout = data_cfg.heldout_wording_names
    assert heldout == demo.DEMO_HELDOUT_WORDINGS
    assert {ARITHMETIC_WORDINGS[name] for name in heldout} == {"symbols", "words", "story"}
    assert set(data_cfg.training_wording_names) == set(ARITHMETIC_WORDINGS) - set(heldout)
    with pytest.raises(ValueError, match="--synthetic_heldout_wordings: unknown wordings \\['bogus'\\]"):
        parse_config((demo.DemoConfig,), ["--synthetic_heldout_wordings", "bogus"])


def outcomes(prefix: str, pairs: list[tuple[int, int]]) -> tuple[dict, dict]:
    """Hand-made first attempts before and after for problems <prefix>0, <prefix>1, ...: (right before, right after)."""
    ids = [f"{prefix}{index}" for index in range(len(pairs))]
    before = {i: _attempt(i, bool(b), "x") for i, (b, _) in zip(ids, pairs)}
    after = {i: _attempt(i, bool(a), "x") for i, (_, a) in zip(ids, pairs)}
    return before, after


def grouped(train_pairs, heldout_pairs, other_pairs=()):
    """changes_by_wording over problems t* (training wording), h* (held-out wording), n* (no wording field)."""
    before, after, wording_of = {}, {}, {}
    for prefix, pairs, wording in (("t", train_pairs, "compute_symbols"), ("h", heldout_pairs, "story_two_people"),
                                   ("n", other_pairs, None)):
        b, a = outcomes(prefix, list(pairs))
        before |= b
        after |= a
        wording_of |= {i: wording for i in b}
    return demo.changes_by_wording(before, after, wording_of, demo.DEMO_HELDOUT_WORDINGS)


def test_changes_by_wording_splits_training_and_held_out_wordings():
    groups = grouped([(0, 1), (0, 1), (1, 0), (1, 1)], [(0, 0), (1, 0), (0, 1)], [(0, 1)])
    assert groups["training_wordings"] == {"problems": 5, "gained": 3, "lost": 1, "before_correct": 2,
                                           "after_correct": 4, "p_value": pytest.approx(sign_test_p(3, 1))}
    assert groups["heldout_wordings"] == {"problems": 3, "gained": 1, "lost": 1, "before_correct": 1,
                                          "after_correct": 1, "p_value": 1.0}
    assert groups["all"]["problems"] == 8 and (groups["all"]["gained"], groups["all"]["lost"]) == (4, 2)
    assert groups["all"]["before_correct"] == 3 and groups["all"]["after_correct"] == 5


@pytest.mark.parametrize("train_pairs, heldout_pairs, kind, phrase", [
    ([(0, 0)] * 6, [(0, 1)] * 6, "carries_over", "the gain carries over to wordings never trained on"),
    ([(0, 1)] * 6, [(0, 1), (1, 0)], "training_wordings_only", "the gain is only on the training wordings"),
    ([(0, 1)] * 3, [(0, 1)] * 3, "no_effect", "no effect beyond noise on either"),
    ([(0, 0)] * 4, [(1, 0)] * 6, "worse", "FELL beyond noise on the held-out wordings"),
])
def test_carry_over_verdict_says_which_it_is(train_pairs, heldout_pairs, kind, phrase):
    groups = grouped(train_pairs, heldout_pairs)
    found, sentence = demo.carry_over_verdict(groups)
    assert found == kind and phrase in sentence
    assert f"held-out wordings {groups['heldout_wordings']['gained']} gained and" in sentence
    # 3 + 3 gained is p = 0.031 pooled, though neither half is: the sentence says so
    assert ("Pooled, all 6 problems do gain beyond noise" in sentence) == (kind == "no_effect")


def test_compare_by_wording_reads_wordings_from_the_eval_file(tmp_path, capsys):
    rows = [{"id": f"{p}{i}", "problem": "x", "answer": "1", "type": "arithmetic", "level": 1,
             **({"wording": w} if w else {})}
            for p, w in (("t", "compute_symbols"), ("h", "value_of_symbols")) for i in range(6)]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    before, after = outcomes("t", [(0, 0)] * 6)
    held_before, held_after = outcomes("h", [(0, 1)] * 6)
    data = SimpleNamespace(eval_file=str(eval_file))
    (cfg,) = parse_config((demo.DemoConfig,), [])
    groups, carry = demo.compare_by_wording(*demo.eval_wordings(cfg, data), before | held_before, after | held_after)
    assert carry["kind"] == "carries_over" and carry["heldout_wordings"] == list(demo.DEMO_HELDOUT_WORDINGS)
    assert groups["heldout_wordings"]["after_correct"] == 6
    out = capsys.readouterr().out
    assert re.search(r"held-out wordings: +before 0/6 = 0\.0%.*after 6/6 = 100\.0%.*6 became right, 0 became wrong", out)
    (none,) = parse_config((demo.DemoConfig,), ["--synthetic_heldout_wordings", "none"])
    assert demo.compare_by_wording(*demo.eval_wordings(none, data), before, after) == (None, None)
    assert "does not test whether a gain carries over" in capsys.readouterr().out


# --- output folder ---

def test_output_dir_with_foreign_files_is_refused_untouched(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="notes.txt"):
        demo.prepare_output_dir(str(tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "train").is_dir()


def test_output_dir_of_an_earlier_demo_is_cleared(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "stale.json").write_text("{}")
    (tmp_path / demo.SUMMARY_FILE).write_text("{}")
    paths = demo.prepare_output_dir(str(tmp_path))
    assert os.listdir(tmp_path) == [] and paths["train"] == str(tmp_path / "train")


# --- end to end ---

def check_run(summary, output_dir, num_eval):
    for path in summary["files"]["data"]:
        assert os.path.isfile(path)
    for name in ("eval_before_training", "eval_after_training"):
        folder = output_dir / name
        for file in ("generations.jsonl", "metrics.json", "results.md"):
            assert (folder / file).is_file(), (name, file)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["num_problems"] == num_eval
    assert os.path.isfile(os.path.join(summary["files"]["trained model"], "config.json"))
    assert os.path.isfile(summary["files"]["stage 1 values"]) and os.path.isfile(summary["files"]["training metrics"])
    assert (output_dir / "comparison.md").read_text().startswith("# Comparison")
    assert json.loads((output_dir / demo.SUMMARY_FILE).read_text())["verdict"] == summary["verdict"]
    stage1_lines = (output_dir / "train" / "stage1_values.jsonl").read_text().splitlines()
    assert len(stage1_lines) == demo.QUICK_SIZES["train_prompts"] == summary["stage1"]["prompts"]
    assert summary["stage2"]["steps"] == demo.QUICK_SIZES["stage2_steps"]
    assert summary["before"]["num_problems"] == summary["after"]["num_problems"] == num_eval
    changes = summary["first_attempt_changes"]
    assert changes["problems"] == num_eval and 0 <= changes["gained"] + changes["lost"] <= num_eval
    # the held-out wordings are half the evaluated problems and never in the training files
    train_file, subset_file, _ = summary["files"]["data"]
    for path in (train_file, subset_file):
        assert not {json.loads(line)["wording"] for line in open(path)} & set(demo.DEMO_HELDOUT_WORDINGS)
    by_wording = summary["by_wording"]
    assert by_wording["heldout_wordings"]["problems"] == by_wording["training_wordings"]["problems"] == num_eval // 2
    assert summary["carry_over"]["kind"] in ("carries_over", "training_wordings_only", "worse", "no_effect")


def test_quick_demo_end_to_end_with_a_tiny_model(tiny_dir, tmp_path, capsys):
    cfg = demo.DemoConfig(model=str(tiny_dir), quick=True, output_dir=str(tmp_path / "demo"), max_new_tokens=4)
    summary = demo.main(cfg)
    check_run(summary, tmp_path / "demo", demo.QUICK_SIZES["eval_problems"])
    # a random model answers nothing: no reward, no change, and the demo says there is no effect
    assert summary["stage1"]["pass_rate"] == 0.0
    assert summary["effect_beyond_noise"] is False
    out = capsys.readouterr().out
    for number in range(1, 7):
        assert f"Step {number} of 6:" in out
    assert "NO held-out effect" in out and "Qwen/Qwen2.5-1.5B-Instruct" in out
    assert summary["carry_over"]["kind"] == "no_effect" and "no effect beyond noise on either" in out
    # the loop's report: before and after, every group, and the one-line note that the turns were not trained
    correction = summary["self_correction"]
    assert set(correction) == {"before", "after", "trained_turns", "sentence"}
    assert correction["after"]["all"]["problems"] == demo.QUICK_SIZES["eval_problems"]
    assert "This run trained first attempts only" in correction["sentence"] and "verify-and-revise loop" in out
    # bench/demo_seeds.py turns the finished run into its row of the seed table
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    try:
        import demo_seeds
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))
    row = demo_seeds.table([demo_seeds.load_run(str(tmp_path / "demo"))]).splitlines()[2]
    assert row.startswith(f"| {cfg.seed} | ") and "first attempts only" in row
    # a second run into the same folder replaces the first
    assert demo.main(cfg)["verdict"] == summary["verdict"]


@pytest.mark.slow
def test_quick_demo_end_to_end_with_the_embedded_model(tmp_path):
    summary = demo.main(demo.DemoConfig(quick=True, output_dir=str(tmp_path / "demo")))
    check_run(summary, tmp_path / "demo", demo.QUICK_SIZES["eval_problems"])


def test_a_significant_loss_is_reported_as_damage_not_as_no_effect():
    worse = {"problems": 32, "gained": 0, "lost": 6, "p_value": sign_test_p(0, 6)}
    flat = {"before_low": 0.0, "before_high": 0.1, "after_low": 0.0, "after_high": 0.1}
    effect, text = demo.effect_verdict(worse, flat)
    assert effect is False
    assert "WORSE beyond noise" in text and "p = 0.031" in text and "NO held-out effect" not in text
