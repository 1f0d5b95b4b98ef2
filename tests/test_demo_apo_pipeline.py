"""Tests of the demo (demo_apo_pipeline.py): its configuration, the statistics of its verdict,
its output folder rules, and end-to-end --quick runs (a tiny random Llama in seconds; the
embedded SmolLM2 marked slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import demo_apo_pipeline as demo
from apo.config import parse_config
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
    assert full.train_prompts == 32 and full.stage2_steps == 8


@pytest.mark.parametrize("flags, field", [(["--prompts_per_step", "5"], "prompts_per_step"),
                                          (["--train_prompts", "0"], "train_prompts"),
                                          (["--source", "local"], "source")])
def test_invalid_settings_name_the_field(flags, field):
    with pytest.raises(ValueError, match=field):
        parse_config((demo.DemoConfig,), flags)


# --- the verdict's statistics ---

def test_sign_test_hand_values():
    assert demo.sign_test_p(0, 0) == 1.0
    assert demo.sign_test_p(5, 0) == pytest.approx(2 / 32)           # 2 * (1/2)^5
    assert demo.sign_test_p(6, 1) == pytest.approx(2 * 8 / 128)      # 2 * (C(7,0) + C(7,1)) / 2^7
    assert demo.sign_test_p(1, 6) == demo.sign_test_p(6, 1)
    assert demo.sign_test_p(3, 3) == 1.0


def test_format_p_never_prints_zero():
    assert demo.format_p(demo.sign_test_p(0, 6)) == "p = 0.031"
    assert demo.format_p(demo.sign_test_p(17, 1)) == "p < 0.001"     # 2 * 19 / 2^18 = 0.00014


def _attempt(problem_id, correct, text):
    return {"id": problem_id, "role": "attempt", "attempt_index": 0, "correct": correct, "text": text}


def test_paired_changes_and_verdict():
    before = {i: _attempt(i, ok, "so 3") for i, ok in zip("abcdefgh", [1, 0, 0, 0, 0, 0, 0, 1])}
    after = {i: _attempt(i, ok, "\\boxed{3}") for i, ok in zip("abcdefgh", [1, 1, 1, 1, 1, 1, 1, 0])}
    changes = demo.paired_changes(before, after)
    assert changes == {"problems": 8, "gained": 6, "lost": 1, "p_value": pytest.approx(0.125)}
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
    # a second run into the same folder replaces the first
    assert demo.main(cfg)["verdict"] == summary["verdict"]


@pytest.mark.slow
def test_quick_demo_end_to_end_with_the_embedded_model(tmp_path):
    summary = demo.main(demo.DemoConfig(quick=True, output_dir=str(tmp_path / "demo")))
    check_run(summary, tmp_path / "demo", demo.QUICK_SIZES["eval_problems"])


def test_a_significant_loss_is_reported_as_damage_not_as_no_effect():
    worse = {"problems": 32, "gained": 0, "lost": 6, "p_value": demo.sign_test_p(0, 6)}
    flat = {"before_low": 0.0, "before_high": 0.1, "after_low": 0.0, "after_high": 0.1}
    effect, text = demo.effect_verdict(worse, flat)
    assert effect is False
    assert "WORSE beyond noise" in text and "p = 0.031" in text and "NO held-out effect" not in text
