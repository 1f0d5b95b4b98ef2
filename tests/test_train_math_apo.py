"""Tests of the A*-PO trainer (train_math_apo.py, stage1.py, apo/checkpoints.py).

Fast loops use the tiny in-process Llama of conftest, saved as a model folder with the
embedded tokenizer, on synthetic Level-1 problems; a hand-written stage1_values.jsonl gives
stage 2 non-zero advantages (a random model never answers right). Two-process runs go
through torch.distributed.run on CPU (gloo).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from apo import checkpoints, correction, stage1
import apo.synthetic as synthetic_math
import train_math_apo as T
from apo_algorithm import estimate_optimal_value
from apo.config import A_PO_Config, parse_config, save_config
from apo.errors import InputError
from conftest import REPO_ROOT, build_tiny_policy
from apo.checkpoints import resolve_resume_checkpoint, rotate_checkpoints, staged_folder
from apo.data_order import prompt_indices_for_step, total_steps_for
from apo.records import read_metrics_lines as read_metrics
from apo.training_log import MetricsLogger, plot_training_curves
from train_math_apo import NonFiniteTrainingError, lr_scheduler_for

APO_FIELDS = {f.name for f in dataclasses.fields(A_PO_Config)}
# Stage-1 rewards cycled over the training prompts: V* = 0, 0.2935... (beta1 0.5 of [0, 1]), 1.
STAGE1_REWARDS = [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0]]


# --- fixtures ---

@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, embedded_tokenizer):
    folder = tmp_path_factory.mktemp("tiny_policy")
    build_tiny_policy(embedded_tokenizer, seed=0).save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rows = synthetic_math.generate_problems(24, seed=0, levels=[1])
    folder = tmp_path_factory.mktemp("data")
    paths = {"train": folder / "train.jsonl", "eval": folder / "eval.jsonl"}
    for name, part in (("train", rows[:16]), ("eval", rows[16:])):
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in part))
    return {"train_file": str(paths["train"]), "eval_file": str(paths["eval"]), "rows": rows[:16]}


def make_cfg(tiny_dir, data, output_dir, **overrides):
    apo = {"model": str(tiny_dir), "num_value_samples": 2, "max_new_tokens": 4, "generation_batch_size": 16,
           "use_lora": False, "value_epochs": 2, "policy_learning_rate": 1e-3, "beta2": 0.1, "entropy_coef": 0.0}
    train = {"data_file": data["train_file"], "eval_file": data["eval_file"], "output_dir": str(output_dir),
             "stage": "2", "prompts_per_step": 4, "optimizer_steps_per_iteration": 2, "micro_batch_size": 2,
             "max_steps": 2, "eval_every": 0, "eval_size": 4, "save_every": 0, "eval_at_start": False,
             "stage1_batch_size": 4, "mixed_precision": "no"}  # exact float32 updates on every CPU
    for key, value in overrides.items():
        (apo if key in APO_FIELDS else train)[key] = value
    return A_PO_Config(**apo), T.TrainConfig(**train)


def write_stage1(output_dir, rows, apo, rewards=STAGE1_REWARDS):
    """A stage1_values.jsonl (and its meta file) as stage 1 would write it, with chosen rewards."""
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, stage1.STAGE1_FILE), "w") as handle:
        for i, row in enumerate(rows):
            r = rewards[i % len(rewards)]
            handle.write(json.dumps({"id": row["id"], "rewards": r, "v_star": float(estimate_optimal_value(r, 0.5)),
                                     "response_lengths": [4] * len(r)}) + "\n")
    with open(os.path.join(output_dir, stage1.STAGE1_META_FILE), "w") as handle:
        json.dump(stage1.stage1_meta(apo), handle)


def run_stage2(tiny_dir, data, output_dir, **overrides):
    cfg = make_cfg(tiny_dir, data, output_dir, **overrides)
    if not os.path.isfile(os.path.join(output_dir, stage1.STAGE1_FILE)):
        write_stage1(output_dir, data["rows"], cfg[0])
    return T.main(cfg)


def weights(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), name


# --- command line and configs ---

def test_help_exits_zero():
    result = subprocess.run([sys.executable, "train_math_apo.py", "--help"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for flag in ("--resume_from_checkpoint", "--prompts_per_step", "--beta2", "--stage"):
        assert flag in result.stdout


def test_readme_commands_and_shipped_configs_parse():
    apo, train = parse_config((A_PO_Config, T.TrainConfig), ["--data_file", "math_subset.jsonl", "--epochs", "2"])
    assert (train.data_file, train.epochs) == ("math_subset.jsonl", 2.0)
    apo, train = parse_config((A_PO_Config, T.TrainConfig),
                              ["--config", str(REPO_ROOT / "configs" / "apo_qwen2.5-1.5b-instruct_chat.yaml")])
    assert (apo.model, apo.prompt_format, apo.reward_rule) == ("Qwen/Qwen2.5-1.5B-Instruct", "chat", "grade")
    assert (apo.beta1, apo.beta2, apo.num_value_samples, apo.max_new_tokens) == (0.5, 1e-3, 8, 1024)
    assert (train.prompts_per_step, train.optimizer_steps_per_iteration) == (256, 2)
    assert (apo.weight_decay, apo.max_grad_norm) == (0.01, 1.0)
    apo, train = parse_config((A_PO_Config, T.TrainConfig),
                              ["--config", str(REPO_ROOT / "configs" / "embedded_smoke.yaml")])
    assert apo.model == "embedded"
    with pytest.raises(ValueError, match="optimizer_steps_per_iteration"):
        T.TrainConfig(prompts_per_step=5, optimizer_steps_per_iteration=2)


def recipe(name: str, *flags: str):
    from apo.correction import CorrectionTrainingConfig

    return parse_config((A_PO_Config, T.TrainConfig, CorrectionTrainingConfig),
                        ["--config", str(REPO_ROOT / "configs" / name), *flags])


def test_apo_paper_recipe_is_the_papers_setting():
    apo, train, _ = recipe("apo_paper_qwen2.5-1.5b.yaml")
    assert (apo.model, apo.prompt_format, apo.reward_rule) == ("Qwen/Qwen2.5-1.5B", "raw", "boxed_exact")
    assert (apo.num_value_samples, apo.beta1, apo.beta2, apo.temperature, apo.top_p) == (8, 0.5, 1e-3, 1.0, 1.0)
    assert (apo.policy_learning_rate, apo.lr_scheduler, apo.weight_decay, apo.max_grad_norm) == \
        (1e-6, "constant", 0.01, 1.0)
    assert (apo.use_lora, apo.entropy_coef, apo.max_prompt_length, apo.max_new_tokens) == (False, 1e-3, 256, 1024)
    assert (apo.correction_mode, apo.train_correction, apo.filter_all_incorrect) == ("none", False, False)
    assert (train.prompts_per_step, train.optimizer_steps_per_iteration, train.epochs) == (256, 2, 25.0)
    assert train.step_count == "official"
    assert (train.data_file, train.eval_file, train.eval_size) == ("math_prompts_responses.jsonl",
                                                                   "math_eval_500.jsonl", 500)


def test_pag_recipe_is_pags_episode_with_the_turns_trained():
    apo, train, turns = recipe("pag_qwen2.5-1.5b-instruct.yaml")
    assert (apo.model, apo.prompt_format, apo.correction_mode) == ("Qwen/Qwen2.5-1.5B-Instruct", "chat", "self_verify")
    assert (apo.train_correction, apo.max_correction_turns, apo.verify_final_attempt, apo.verdict_parse) == \
        (True, 2, False, "pag")
    assert (apo.revision_bonus_alpha, apo.entropy_coef, apo.policy_learning_rate, apo.use_lora) == \
        (1.0, 0.0, 1e-6, False)
    assert turns.center_turn_advantages and apo.reward_rule == "grade" and apo.verify_reward == "match"
    assert not turns.balance_verify_truth and not turns.counterfactual_verdicts  # PAG trains the sampled verdicts
    assert (apo.system_prompt, apo.verify_prompt, apo.revise_prompt) == (
        A_PO_Config().system_prompt, A_PO_Config().verify_prompt, A_PO_Config().revise_prompt)


def _recipe_data(folder) -> None:
    """MATH train rows and 8 MATH-500 problems under the names the recipes read, in `folder`."""
    from conftest import MATH_DIR

    if MATH_DIR is None or not (MATH_DIR / "train.jsonl").is_file():
        pytest.skip(f"real MATH data not found at {MATH_DIR} (set APO_SHARED_DATA)")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "prepare_data.py"), "--source", "local", "--train_path",
                             str(MATH_DIR / "train.jsonl"), "--math500_path", str(MATH_DIR / "test500.jsonl"),
                             "--tokenizer", "none", "--subset_size", "8"], cwd=folder, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    eval_path = os.path.join(folder, "math_eval_500.jsonl")
    with open(eval_path) as handle:
        kept = handle.readlines()[:8]  # the command's sizes are the model's and the prompts'; keep the check short
    with open(eval_path, "w") as handle:
        handle.writelines(kept)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["apo_paper_qwen2.5-1.5b.yaml", "pag_qwen2.5-1.5b-instruct.yaml"])
def test_recipe_runs_on_cpu_with_the_embedded_model(tmp_path, config):
    """The done-when command of issue 14: the recipe itself, only the model and the sizes swapped.

    --prompts_per_step 8 on top of the issue's command: the recipes' 256 prompts per step (the
    4 prompts repeated 64 times) made one step of the PAG recipe take over 15 minutes here."""
    _recipe_data(tmp_path)
    command = [sys.executable, str(REPO_ROOT / "train_math_apo.py"), "--config", str(REPO_ROOT / "configs" / config),
               "--model", "embedded", "--max_steps", "1", "--max_train_prompts", "4", "--max_new_tokens", "16",
               "--prompts_per_step", "8"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=3000,
                            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    assert result.returncode == 0, result.stderr[-3000:]
    output_dir = tmp_path / "outputs" / config.removesuffix(".yaml")
    assert (output_dir / "final").is_dir()
    with open(output_dir / stage1.STAGE1_META_FILE) as handle:
        meta = json.load(handle)
    expected = {"apo_paper_qwen2.5-1.5b.yaml": ("raw", "boxed_exact"), "pag_qwen2.5-1.5b-instruct.yaml": ("chat", "grade")}
    assert (meta["prompt_format"], meta["reward_rule"], meta["max_new_tokens"]) == (*expected[config], 16)
    steps = [r for r in read_metrics(str(output_dir / "metrics.jsonl")) if "loss" in r]
    assert len(steps) == 1 and math.isfinite(steps[0]["loss"])


# --- schedules, data order, files ---

def _lr_factors(kind: str, warmup: int, total: int, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = lr_scheduler_for(optimizer, A_PO_Config(lr_scheduler=kind, warmup_steps=warmup), total)
    factors = []
    for _ in range(steps):
        factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return factors


def test_lr_schedules_hand_values():
    assert _lr_factors("constant", 2, 10, 4) == pytest.approx([0.0, 0.5, 1.0, 1.0])
    assert _lr_factors("constant", 0, 10, 3) == pytest.approx([1.0, 1.0, 1.0])
    assert _lr_factors("cosine", 0, 10, 11)[5] == pytest.approx(0.5)
    assert _lr_factors("cosine", 0, 10, 11)[10] == pytest.approx(0.0)
    assert _lr_factors("linear", 2, 12, 8)[7] == pytest.approx(0.5)


def test_prompt_order_is_a_permutation_per_epoch_and_deterministic():
    stream = [i for step in range(5) for i in prompt_indices_for_step(5, 3, step, seed=7)]
    assert len(stream) == 15
    for epoch in range(3):
        assert sorted(stream[5 * epoch:5 * epoch + 5]) == [0, 1, 2, 3, 4]
    assert prompt_indices_for_step(5, 3, 1, seed=7) == stream[3:6]  # crosses the epoch boundary
    assert stream != [i for step in range(5) for i in prompt_indices_for_step(5, 3, step, seed=8)]
    assert total_steps_for(16, 4, 2.0, 0) == 8 and total_steps_for(16, 5, 1.0, 0) == 4
    assert total_steps_for(16, 4, 2.0, 3) == 3


@pytest.mark.parametrize("num_prompts, expected", [
    (7424, 724), (7495, 724), (7679, 724),  # 29 full batches per epoch, the last partial one dropped
    (7423, 699), (7680, 749), (7035, 674),  # 7,035: the recipe's prompts of <= 256 embedded-tokenizer tokens
])
def test_official_step_count_is_the_official_loops(num_prompts, expected):
    """ray_trainer.py of ZhaolinGao/A-PO: total = epochs * len(drop_last dataloader), global_steps
    starts at 1 and the loop returns at global_steps >= total after that step's update."""
    def official_updates(n, batch, epochs):  # the official loop, run
        total, global_steps, updates = epochs * (n // batch), 1, 0
        for _ in range(epochs):
            for _ in range(n // batch):
                updates += 1
                global_steps += 1
                if global_steps >= total:
                    return updates
        return updates

    assert total_steps_for(num_prompts, 256, 25.0, 0, "official") == official_updates(num_prompts, 256, 25) == expected
    assert total_steps_for(7495, 256, 25.0, 0, "stream") == 732
    assert total_steps_for(7495, 256, 25.0, 10, "official") == 10  # max_steps still wins
    with pytest.raises(InputError, match="floor"):
        total_steps_for(255, 256, 1.0, 0, "official")
    with pytest.raises(InputError, match="whole epochs"):
        total_steps_for(7495, 256, 2.5, 0, "official")
    with pytest.raises(ValueError, match="step_count"):
        T.TrainConfig(epochs=2.5, step_count="official")


def test_staged_folder_leaves_previous_checkpoint_on_a_full_disk(tmp_path):
    final = tmp_path / "checkpoint-2"
    final.mkdir()
    (final / "weights").write_text("old")
    with pytest.raises(OSError, match="No space"):
        with staged_folder(str(final), True, lambda: None) as staging:
            (tmp_path / staging / "weights").write_text("half")
            raise OSError(28, "No space left on device")
    assert (final / "weights").read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2"]
    with staged_folder(str(final), True, lambda: None) as staging:
        (tmp_path / staging / "weights").write_text("new")
    assert (final / "weights").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2"]


def write_sound_checkpoint(folder):
    """The files checkpoints.checkpoint_problem requires, with a real (tiny) safetensors file."""
    (folder / "accelerate_state").mkdir(parents=True)
    (folder / "policy").mkdir()
    (folder / "policy" / "config.json").write_text("{}")
    save_file({"w": torch.zeros(2)}, str(folder / "policy" / "model.safetensors"))
    for name in ("trainer_state.json", "run_config.json"):
        (folder / name).write_text("{}")


def test_resume_resolution_and_rotation(tmp_path):
    assert resolve_resume_checkpoint(str(tmp_path), "auto") is None
    for step in (2, 4, 10):
        write_sound_checkpoint(tmp_path / f"checkpoint-{step}")
    (tmp_path / "checkpoint-12").mkdir()  # incomplete: no trainer_state.json
    assert resolve_resume_checkpoint(str(tmp_path), "auto") == str(tmp_path / "checkpoint-10")
    assert resolve_resume_checkpoint(str(tmp_path), "") is None
    with pytest.raises(FileNotFoundError, match="trainer_state.json"):
        resolve_resume_checkpoint(str(tmp_path), str(tmp_path / "checkpoint-12"))
    rotate_checkpoints(str(tmp_path), keep=2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-10", "checkpoint-12", "checkpoint-4"]


def test_metrics_logger_drops_steps_after_resume_and_plots(tmp_path):
    logger = MetricsLogger(str(tmp_path))
    for step in (1, 2, 3):
        logger.log({"step": step, "reward_mean": 0.1 * step})
    logger.log({"step": 3, "eval_accuracy": 0.5})
    logger = MetricsLogger(str(tmp_path), resume_step=2)
    assert [r["step"] for r in read_metrics(logger.path)] == [1, 2]
    png = plot_training_curves(logger.path, str(tmp_path / "curves.png"))
    assert os.path.getsize(png) > 1000
    with pytest.raises(ValueError, match="none, tensorboard, wandb"):
        MetricsLogger(str(tmp_path), report_to="mlflow")


def test_long_prompts_are_dropped_and_named(embedded_tokenizer, data, caplog):
    from apo.prompts import encode_problem

    apo = A_PO_Config()
    lengths = [len(encode_problem(embedded_tokenizer, r["problem"], "chat", apo.system_prompt)) for r in data["rows"]]
    limit = sorted(lengths)[len(lengths) // 2]
    apo = A_PO_Config(max_prompt_length=limit)
    with caplog.at_level("WARNING", logger="apo.stage1"):
        kept, prompts, dropped = stage1.encode_problems(data["rows"], embedded_tokenizer, apo)
    long_ids = [r["id"] for r, length in zip(data["rows"], lengths) if length > limit]
    assert dropped == long_ids and len(long_ids) > 0
    assert len(kept) == len(prompts) == len(lengths) - len(dropped)
    assert all(len(p) <= limit for p in prompts)
    # the warning names the dropped ids, not just their number (issue 19)
    assert f"dropped {len(long_ids)} of {len(lengths)} prompts" in caplog.text and long_ids[0] in caplog.text


# --- stage 1 ---

def test_stage1_writes_values_and_a_rerun_only_samples_missing_ids(tiny_dir, data, tmp_path):
    apo, train = make_cfg(tiny_dir, data, tmp_path, stage="1", max_train_prompts=8)
    summary = T.main((apo, train))
    path = summary["stage1_values"]
    lines = open(path).read().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [r["id"] for r in data["rows"][:8]]
    for record in records:
        assert len(record["rewards"]) == 2 and len(record["response_lengths"]) == 2
        assert record["v_star"] == pytest.approx(float(estimate_optimal_value(record["rewards"], 0.5)))
    assert os.path.isfile(os.path.join(summary["value_head"], "value_head.safetensors"))
    assert summary["value_head_metrics"]["held_out"]["n"] == 1  # round(0.1 * 8)

    # An interruption after the first batch, in the middle of writing the second.
    with open(path, "w") as handle:
        handle.write("\n".join(lines[:4]) + "\n" + lines[4][:10])
    T.main((apo, train))
    again = open(path).read().splitlines()
    assert again[:4] == lines[:4] and len(again) == 8
    assert sorted(json.loads(line)["id"] for line in again[4:]) == sorted(r["id"] for r in records[4:])
    # Seeded by batch: the re-sampled prompts got the responses an uninterrupted run gave them.
    assert {json.loads(line)["id"]: json.loads(line)["response_lengths"] for line in again[4:]} == \
        {r["id"]: r["response_lengths"] for r in records[4:]}


def test_stage1_alone_without_a_reference_copy_matches_stage1_of_a_full_run(tiny_dir, data, tmp_path):
    """Full fine-tuning: stage 1 alone loads no frozen copy (apo.models.build_models) and reads pi_ref
    from the policy; its values and value head are those of stage 1 inside `--stage all`."""
    alone = T.main(make_cfg(tiny_dir, data, tmp_path / "alone", stage="1", max_train_prompts=8))
    full = T.main(make_cfg(tiny_dir, data, tmp_path / "all", stage="all", max_train_prompts=8, max_steps=1))
    assert open(alone["stage1_values"]).read() == open(full["stage1_values"]).read()
    heads = [load_file(os.path.join(s["value_head"], "value_head.safetensors")) for s in (alone, full)]
    assert heads[0].keys() == heads[1].keys()
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_stage2_refuses_missing_or_mismatched_stage1(tiny_dir, data, tmp_path):
    apo, train = make_cfg(tiny_dir, data, tmp_path)
    with pytest.raises(FileNotFoundError, match="stage 1"):
        T.main((apo, train))
    write_stage1(tmp_path, data["rows"], apo, rewards=[[0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="num_value_samples"):
        T.main((apo, train))
    write_stage1(tmp_path, data["rows"] + [{"id": "someone/else"}], apo)
    with pytest.raises(ValueError, match="not in the data file"):
        T.main((apo, train))
    write_stage1(tmp_path, data["rows"], dataclasses.replace(apo, model="other-model"))
    with pytest.raises(ValueError, match="other settings"):
        T.main((apo, train))
    # stage 1 in raw prompts, stage 2 in chat: refused, naming the field
    write_stage1(tmp_path, data["rows"], dataclasses.replace(apo, prompt_format="raw", correction_mode="none"))
    with pytest.raises(ValueError, match="prompt_format: stage 1 and stage 2 must use one prompt format"):
        T.main((apo, train))
    write_stage1(tmp_path, data["rows"], dataclasses.replace(apo, reward_rule="boxed_exact"))
    with pytest.raises(ValueError, match="reward_rule"):
        T.main((apo, train))


# --- runs that cannot mix, inputs that cannot crash (issue 19) ---

def test_a_fresh_run_refuses_a_folder_holding_another_run_and_overwrite_removes_it_first(tiny_dir, data, tmp_path):
    """Issue 19: a second run at another learning rate in the same folder lost steps, rotated away its own
    checkpoint-1 and left final/ with the old weights."""
    run_stage2(tiny_dir, data, tmp_path, max_steps=3, save_every=1, keep_checkpoints=2)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("checkpoint")) == ["checkpoint-2", "checkpoint-3"]
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"already holds another run \(best; checkpoint-2; checkpoint-3; final; "
                                         r"metrics.jsonl\); pass --resume_from_checkpoint auto .* --overwrite_output_dir"):
        run_stage2(tiny_dir, data, tmp_path, max_steps=1, save_every=1, policy_learning_rate=5e-3)
    new = run_stage2(tiny_dir, data, tmp_path, max_steps=1, save_every=1, policy_learning_rate=5e-3,
                     overwrite_output_dir=True)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("checkpoint")) == ["checkpoint-1"]
    assert [r["step"] for r in read_metrics(new["metrics_file"])] == [1, 1]    # the step and its evaluation
    with open(tmp_path / "final" / "run_config.json") as handle:
        assert json.load(handle)["policy_learning_rate"] == 5e-3
    assert_same_weights(weights(new["final_dir"]), weights(tmp_path / "checkpoint-1" / "policy"))  # not the old run's
    assert (tmp_path / "notes.txt").read_text() == "mine"            # only the run's own files are removed
    assert os.path.isfile(tmp_path / stage1.STAGE1_FILE)              # matching stage-1 values are reused
    assert checkpoints.STAGE1_OUTPUTS == (stage1.STAGE1_FILE, stage1.STAGE1_META_FILE, stage1.VALUE_HEAD_DIR)


def test_a_resume_refuses_settings_that_change_the_run_naming_them(tiny_dir, data, tmp_path):
    """Issue 19: resuming the old run's checkpoint-3 at another learning rate exited 0 and mixed both runs."""
    paused = run_stage2(tiny_dir, data, tmp_path, max_steps=3, stop_after_step=1)
    assert paused["interrupted"] and os.path.isdir(tmp_path / "checkpoint-1")
    with pytest.raises(InputError, match=r"cannot resume from .*checkpoint-1: settings that change the run differ "
                                         r"\(beta2: checkpoint 0.1, now 0.2; policy_learning_rate: checkpoint 0.001, "
                                         r"now 0.005\)"):
        run_stage2(tiny_dir, data, tmp_path, max_steps=3, resume_from_checkpoint="auto", policy_learning_rate=5e-3,
                   beta2=0.2)
    for changed in ({"data_file": data["eval_file"]}, {"seed": 7}, {"temperature": 0.5}, {"policy_loss": "awr"}):
        with pytest.raises(InputError, match=f"differ \\({next(iter(changed))}: checkpoint"):
            run_stage2(tiny_dir, data, tmp_path, max_steps=3, resume_from_checkpoint="auto", **changed)
    with pytest.raises(InputError, match="not both"):
        make_cfg(tiny_dir, data, tmp_path, resume_from_checkpoint="auto", overwrite_output_dir=True)


def test_auto_restarts_a_run_that_stopped_before_its_first_checkpoint_only_with_its_settings(tiny_dir, data,
                                                                                             tmp_path):
    apo, train = make_cfg(tiny_dir, data, tmp_path, max_steps=1)
    write_stage1(tmp_path, data["rows"], apo)
    save_config(str(tmp_path / "run_config.json"), apo, train, correction.CorrectionTrainingConfig())
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "eval_accuracy": 0.0}\n')  # killed before checkpoint-1
    with pytest.raises(InputError, match=r"already holds another run \(metrics.jsonl\)"):
        run_stage2(tiny_dir, data, tmp_path, max_steps=1)
    with pytest.raises(InputError, match=r"cannot resume from .*: settings that change the run differ "
                                         r"\(policy_learning_rate: checkpoint 0.001, now 0.005\)"):
        run_stage2(tiny_dir, data, tmp_path, max_steps=1, resume_from_checkpoint="auto", policy_learning_rate=5e-3)
    summary = run_stage2(tiny_dir, data, tmp_path, max_steps=1, resume_from_checkpoint="auto")
    assert summary["steps"] == 1 and [r["step"] for r in read_metrics(summary["metrics_file"])] == [1, 1]


def test_bad_data_files_and_output_folders_are_refused_before_any_model_loads(tiny_dir, data, tmp_path):
    """Issue 19: an empty data file loaded the model and ran stage 1 over 0 prompts; a non-UTF-8 byte was a
    bare UnicodeDecodeError; --output_dir naming a file was a raw FileExistsError."""
    empty, latin1 = tmp_path / "empty.jsonl", tmp_path / "latin1.jsonl"
    empty.write_text("")
    lines = open(data["train_file"], "rb").read().splitlines(keepends=True)
    latin1.write_bytes(lines[0] + lines[1].replace(b'"problem": "', b'"problem": "\xff'))
    no_model = {"model": str(tmp_path / "no-such-model")}  # loading it would fail differently
    with pytest.raises(InputError, match=r"empty.jsonl: no problem rows \(the file is empty\)"):
        T.main(make_cfg(tiny_dir, data, tmp_path / "out", stage="all", data_file=str(empty), **no_model))
    with pytest.raises(InputError, match=r"latin1.jsonl:2: not valid JSON \(not UTF-8: byte 0xff"):
        T.main(make_cfg(tiny_dir, data, tmp_path / "out", stage="all", data_file=str(latin1), **no_model))
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(InputError, match=r"--output_dir .*taken: is a file"):
        T.main(make_cfg(tiny_dir, data, tmp_path / "taken", **no_model))


def test_a_torn_metrics_line_is_dropped_at_the_end_and_named_in_the_middle(tmp_path, caplog):
    """Issue 19: a torn last line in metrics.jsonl made resume die with a bare JSONDecodeError."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    with caplog.at_level("WARNING", logger="apo.records"):
        logger = MetricsLogger(str(tmp_path), resume_step=2)
    assert "metrics.jsonl:3: dropping a torn last line" in caplog.text
    logger.log({"step": 3, "loss": 0.3})
    assert [r["step"] for r in read_metrics(logger.path)] == [1, 2, 3]
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo\n{"step": 3, "loss": 0.3}\n')
    with pytest.raises(InputError, match=r"metrics.jsonl:2: not valid JSON"):
        MetricsLogger(str(tmp_path), resume_step=2)


# --- stage 2 ---

def test_stage2_writes_checkpoints_metrics_and_a_loadable_final_model(tiny_dir, data, tmp_path):
    from transformers import AutoModelForCausalLM

    summary = run_stage2(tiny_dir, data, tmp_path, max_steps=2, save_every=1, keep_checkpoints=1, eval_every=1,
                         eval_at_start=True, filter_all_incorrect=True)
    assert summary["filtered_all_incorrect"] == 4 and summary["stage2_prompts"] == 12
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("checkpoint")) == ["checkpoint-2"]
    for name in ("policy", "accelerate_state", "value_head", "run_config.json", "trainer_state.json"):
        assert os.path.exists(tmp_path / "checkpoint-2" / name), name
    records = read_metrics(summary["metrics_file"])
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for key in ("loss", "reward_mean", "v_star_mean", "advantage_mean", "advantage_std", "log_ratio_mean", "entropy",
                "response_length", "truncation_rate", "grad_norm", "lr", "generated_tokens_per_s", "generation_s",
                "scoring_s", "update_s", "grading_timeouts"):
        assert all(math.isfinite(r[key]) for r in steps), key
    assert steps[0]["optimizer_step"] == 2 and steps[0]["num_samples"] == 4
    assert [r["step"] for r in records if "eval_accuracy" in r] == [0, 1, 2]
    assert os.path.isfile(summary["plot"])
    final = AutoModelForCausalLM.from_pretrained(summary["final_dir"])
    initial = AutoModelForCausalLM.from_pretrained(tiny_dir)
    changed = [n for n, p in final.named_parameters() if not torch.equal(p, initial.get_parameter(n))]
    assert changed  # stage 2 moved the weights
    assert os.path.isfile(tmp_path / "best" / "eval.json")


def test_lora_final_is_the_merged_adapter(tiny_dir, data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    summary = run_stage2(tiny_dir, data, tmp_path, use_lora=True, policy_learning_rate=0.05, max_steps=1,
                         save_every=1, lora_r=4, lora_alpha=8)
    final = AutoModelForCausalLM.from_pretrained(summary["final_dir"]).eval()
    assert not [k for k in weights(summary["final_dir"]) if "lora" in k]
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir),
                                        str(tmp_path / "checkpoint-1" / "adapter")).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    ids = torch.tensor([[1, 200, 300, 400, 500]])
    with torch.no_grad():
        merged_logits, adapter_logits, base_logits = final(ids).logits, adapted(ids).logits, base(ids).logits
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)


def _record_scoring_temperatures(monkeypatch) -> list:
    seen = []
    policy_scoring, reference_scoring = T.response_token_logps, T.reference_logps

    def policy_logps(*args, **kwargs):
        seen.append(("policy", kwargs.get("temperature")))
        return policy_scoring(*args, **kwargs)

    def ref_logps(*args, **kwargs):
        seen.append(("reference", kwargs.get("temperature")))
        return reference_scoring(*args, **kwargs)

    monkeypatch.setattr(T, "response_token_logps", policy_logps)
    monkeypatch.setattr(T, "reference_logps", ref_logps)
    return seen


@pytest.mark.parametrize("train_correction", [False, True])
def test_samples_are_scored_at_the_rollout_temperature(tiny_dir, data, tmp_path, monkeypatch, train_correction):
    seen = _record_scoring_temperatures(monkeypatch)
    apo, train = make_cfg(tiny_dir, data, tmp_path, temperature=0.7, top_p=0.95, max_steps=1,
                          train_correction=train_correction)
    write_stage1(tmp_path, data["rows"], apo)
    T.main((apo, train))
    assert {role for role, _ in seen} == {"policy", "reference"}
    assert {temperature for _, temperature in seen} == {0.7}
    assert T.scoring_temperature(0.0) == 1.0 and T.scoring_temperature(0.6) == 0.6


def test_micro_batch_size_does_not_change_the_update(tiny_dir, data, tmp_path):
    # One intra-op thread: with two, how a reduction is split across threads depends on the row
    # count, and AdamW's first step (about lr * sign(g)) turns the last-bit differences of
    # near-zero gradient entries into weight differences of up to lr (it failed at 1e-5 on the 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_stage2(tiny_dir, data, tmp_path / "mb1", micro_batch_size=1, max_steps=1)
        two = run_stage2(tiny_dir, data, tmp_path / "mb2", micro_batch_size=2, max_steps=1)
    finally:
        torch.set_num_threads(threads)
    first, second = (read_metrics(s["metrics_file"])[0] for s in (one, two))
    # The gradient norm (before clipping) catches a wrong normalisation, which AdamW's
    # scale-invariant first step would hide in the weights.
    assert first["grad_norm"] == pytest.approx(second["grad_norm"], rel=1e-5) and first["grad_norm"] > 0
    assert first["loss"] == pytest.approx(second["loss"], rel=1e-5)
    assert_same_weights(weights(one["final_dir"]), weights(two["final_dir"]), atol=1e-5)


@pytest.mark.parametrize("use_lora", [False, True])
def test_under_bf16_autocast_the_reference_pass_matches_the_policy_pass(tiny_dir, data, tmp_path, use_lora):
    """Before the first optimizer step the policy is the reference, so every log-ratio is 0: the
    reference pass must run at the policy's precision (bf16 autocast, --mixed_precision auto on
    CPUs with bfloat16 instructions), not in float32 beside a bfloat16 policy pass."""
    summary = run_stage2(tiny_dir, data, tmp_path / "bf16", mixed_precision="bf16", use_lora=use_lora,
                         optimizer_steps_per_iteration=1, max_steps=1)
    (line,) = [r for r in read_metrics(summary["metrics_file"]) if "loss" in r]
    assert line["log_ratio_mean"] == 0.0


def test_auto_mixed_precision_follows_the_hardware(monkeypatch):
    import apo.models as models

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(models.torch.cuda, "is_available", lambda: False)
    for native, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(models, "cpu_has_native_bfloat16", lambda native=native: native)
        assert models.resolve_mixed_precision("auto") == expected
    assert models.resolve_mixed_precision("no") == "no"


@pytest.mark.slow
def test_resume_reaches_the_state_of_an_uninterrupted_run(tiny_dir, data, tmp_path, monkeypatch):
    seen: dict[str, list] = {"straight": [], "resumed": []}
    original = T.sample_attempts
    current = {"run": "straight"}

    def spy(run, prompts, golds, v_star, seeds=None):
        seen[current["run"]].append(list(golds))
        return original(run, prompts, golds, v_star, seeds)

    monkeypatch.setattr(T, "sample_attempts", spy)
    settings = dict(max_steps=4, save_every=2, temperature=1.0, micro_batch_size=2)
    straight = run_stage2(tiny_dir, data, tmp_path / "straight", **settings)
    current["run"] = "resumed"
    paused = run_stage2(tiny_dir, data, tmp_path / "resumed", stop_after_step=3, **settings)
    assert paused["interrupted"] and paused["steps"] == 3 and "final_dir" not in paused
    resumed = run_stage2(tiny_dir, data, tmp_path / "resumed", resume_from_checkpoint="auto", **settings)
    assert resumed["steps"] == 4 and resumed["optimizer_steps"] == straight["optimizer_steps"] == 8
    assert seen["resumed"] == seen["straight"]  # the same prompts in the same order
    assert_same_weights(weights(straight["final_dir"]), weights(resumed["final_dir"]), atol=1e-5)
    losses = [[r["loss"] for r in read_metrics(s["metrics_file"]) if "loss" in r] for s in (straight, resumed)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and len(losses[1]) == 4


def test_ctrl_c_writes_a_checkpoint_and_the_run_resumes(tiny_dir, data, tmp_path, monkeypatch):
    original, calls = T.update_policy, {"n": 0}

    def interrupted_update(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(T, "update_policy", interrupted_update)
    summary = run_stage2(tiny_dir, data, tmp_path, max_steps=3)
    assert summary["interrupted"] and summary["steps"] == 2
    assert os.path.isfile(tmp_path / "checkpoint-2" / "trainer_state.json")
    summary = run_stage2(tiny_dir, data, tmp_path, max_steps=3, resume_from_checkpoint="auto")
    assert summary["steps"] == 3 and not summary["interrupted"]


def test_nonfinite_losses_are_skipped_then_stop_the_run(tiny_dir, data, tmp_path, monkeypatch):
    original, calls = T.apo_loss, {"n": 0}

    def poisoned_loss(*args, **kwargs):
        calls["n"] += 1  # 2 micro-batches per iteration: iterations 2 and 3 get NaN
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 2 else loss

    monkeypatch.setattr(T, "apo_loss", poisoned_loss)
    with pytest.raises(NonFiniteTrainingError, match="checkpoint-2"):
        run_stage2(tiny_dir, data, tmp_path, max_steps=4, save_every=1, max_nonfinite_steps=2,
                   optimizer_steps_per_iteration=1)
    records = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "loss" in r]
    assert [r["skipped_steps"] for r in records] == [0, 1, 1]
    assert not os.path.exists(tmp_path / "checkpoint-3")
    # The skipped step did not touch the weights.
    assert_same_weights(weights(tmp_path / "checkpoint-1" / "policy"), weights(tmp_path / "checkpoint-2" / "policy"))


@pytest.mark.slow
def test_two_processes_match_one_process(tiny_dir, data, tmp_path):
    settings = dict(max_steps=1, temperature=0.0, generation_batch_size=1, micro_batch_size=1)
    single = run_stage2(tiny_dir, data, tmp_path / "single", **settings)
    apo, train = make_cfg(tiny_dir, data, tmp_path / "ddp", **settings)
    write_stage1(tmp_path / "ddp", data["rows"], apo)
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump({**dataclasses.asdict(apo), **dataclasses.asdict(train)}))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "train_math_apo.py", "--config", str(config)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=600)
    # The run checks after the first step that both ranks hold identical parameters
    # (assert_ranks_in_sync) and fails otherwise.
    assert result.returncode == 0, result.stderr[-3000:]
    state_files = os.listdir(tmp_path / "ddp" / "checkpoint-1" / "accelerate_state")
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(state_files)
    one, two = (read_metrics(str(p / "metrics.jsonl"))[0] for p in (tmp_path / "single", tmp_path / "ddp"))
    assert one["loss"] == pytest.approx(two["loss"], rel=1e-5) and one["loss"] > 0
    assert one["grad_norm"] == pytest.approx(two["grad_norm"], rel=1e-5) and one["num_samples"] == two["num_samples"]
    assert_same_weights(weights(single["final_dir"]), weights(tmp_path / "ddp" / "final"), atol=1e-5)


# --- proof that stage 2 learns ---

LEGS = {"cats": "4", "birds": "2"}


def legs_rows(numbers):
    return [{"id": f"legs/{k}/{animal}", "problem": f"Question {k}: how many legs does one of the {animal} have?",
             "answer": answer, "solution": f"The answer is $\\boxed{{{answer}}}$.", "type": "legs", "level": 1,
             "source": "synthetic"} for k in numbers for animal, answer in LEGS.items()]


def format_only_policy(tokenizer, rows, folder, steps, seed=0):
    """The tiny Llama taught the answer FORMAT only: a bare digit then EOS, the digit drawn
    independently of the question ("5" half of the time, else "2" or "4"). Its greedy answer
    is then "5" everywhere (accuracy 0) while sampling finds the right digit ~25% of the time,
    so any held-out gain afterwards comes from reward, not from this supervised step."""
    import random

    from apo.prompts import encode_problem

    system = A_PO_Config().system_prompt
    prompts = [encode_problem(tokenizer, r["problem"], "chat", system) for r in rows]
    model = build_tiny_policy(tokenizer, seed=seed).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    draw = random.Random(seed)
    for _ in range(steps):
        sequences, labels = [], []
        for i in draw.sample(range(len(prompts)), 16):
            digit = "5" if draw.random() < 0.5 else draw.choice(["2", "4"])
            response = tokenizer.encode(digit, add_special_tokens=False) + [tokenizer.eos_token_id]
            sequences.append(prompts[i] + response)
            labels.append([-100] * len(prompts[i]) + response)
        width = max(map(len, sequences))
        pad = [width - len(s) for s in sequences]
        input_ids = torch.tensor([[tokenizer.pad_token_id] * p + s for p, s in zip(pad, sequences)])
        label_ids = torch.tensor([[-100] * p + s for p, s in zip(pad, labels)])
        attention = (torch.arange(width)[None] >= torch.tensor(pad)[:, None]).long()
        loss = model(input_ids=input_ids, attention_mask=attention, labels=label_ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.mark.slow
def test_stage2_raises_held_out_accuracy(embedded_tokenizer, tmp_path):
    import random

    numbers = random.Random(0).sample(range(1000), 40)
    train_rows, eval_rows = legs_rows(numbers[:28]), legs_rows(numbers[28:])  # held-out question numbers
    for name, rows in (("train", train_rows), ("eval", eval_rows)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    format_only_policy(embedded_tokenizer, train_rows, tmp_path / "policy", steps=60)
    apo = A_PO_Config(model=str(tmp_path / "policy"), num_value_samples=4, max_new_tokens=4, generation_batch_size=64,
                      use_lora=False, policy_learning_rate=1e-3, beta2=0.1, entropy_coef=0.0, value_epochs=5)
    train = T.TrainConfig(data_file=str(tmp_path / "train.jsonl"), eval_file=str(tmp_path / "eval.jsonl"),
                          output_dir=str(tmp_path / "out"), prompts_per_step=16, optimizer_steps_per_iteration=1,
                          micro_batch_size=16, max_steps=24, eval_every=12, eval_size=0, save_every=0)
    summary = T.main((apo, train))
    # Same 24 held-out problems, greedy, before and after stage 2.
    assert summary["final_accuracy"] >= summary["initial_accuracy"] + 0.25, summary


def test_correction_training_plugs_into_the_same_update(tiny_dir, data, tmp_path):
    from apo.correction import CorrectionTrainingConfig

    apo, train = make_cfg(tiny_dir, data, tmp_path, train_correction=True, max_correction_turns=2, max_steps=1,
                          save_every=1, use_lora=True)
    write_stage1(tmp_path, data["rows"], apo)
    summary = T.main((apo, train, CorrectionTrainingConfig(turn_baseline_warmup=2, collapse_min_verdicts=2)))
    record = [r for r in read_metrics(summary["metrics_file"]) if "loss" in r][0]
    # Every first attempt is verified, so at least 2 samples per problem went through the update.
    assert record["num_samples"] >= 8 and record["num_samples/verify"] >= 1
    assert {"acc_t1", "acc_final", "verifier_accuracy"} <= set(record)
    assert os.path.isfile(tmp_path / "checkpoint-1" / "accelerate_state" / "custom_checkpoint_1.pkl")  # baselines


def test_missing_tracker_package_names_the_install_command(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_wandb)
    with pytest.raises(ImportError, match="pip install wandb"):
        MetricsLogger(str(tmp_path), report_to="wandb")


def test_stage1_meta_written_before_prompt_format_existed_means_chat(tmp_path):
    path = os.path.join(tmp_path, stage1.STAGE1_FILE)
    legacy = {k: v for k, v in stage1.stage1_meta(A_PO_Config()).items() if k not in ("prompt_format", "reward_rule")}
    with open(os.path.join(tmp_path, stage1.STAGE1_META_FILE), "w") as handle:
        json.dump(legacy, handle)
    stage1.check_stage1_meta(path, A_PO_Config())  # chat and grade: the only behaviour then
    with pytest.raises(ValueError, match="prompt_format"):
        stage1.check_stage1_meta(path, A_PO_Config(prompt_format="raw", correction_mode="none"))


@pytest.mark.parametrize("center", [False, True])
def test_center_turn_advantages_reaches_the_advantages(tiny_dir, data, tmp_path, monkeypatch, center):
    from apo import correction as correction_module
    from apo.correction import CorrectionTrainingConfig

    seen, original = [], correction_module.role_normalized_advantages

    def recording(samples, **kwargs):
        advantages = original(samples, **kwargs)
        seen.append((kwargs.get("center", False), [s.role for s in samples], advantages))
        return advantages

    monkeypatch.setattr(correction_module, "role_normalized_advantages", recording)
    apo, train = make_cfg(tiny_dir, data, tmp_path, train_correction=True, max_steps=1)
    write_stage1(tmp_path, data["rows"], apo)
    T.main((apo, train, CorrectionTrainingConfig(turn_baseline_warmup=2, collapse_min_verdicts=2,
                                                 center_turn_advantages=center)))
    (used_center, roles, advantages), = seen
    assert used_center is center
    solution = [a for r, a in zip(roles, advantages) if r != "verify"]
    verification = [a for r, a in zip(roles, advantages) if r == "verify"]
    if center:  # centred per group: the solution and the verification advantages each average 0
        assert abs(sum(solution)) < 1e-5 and abs(sum(verification)) < 1e-5


def test_unnormalized_turn_advantages_are_reward_minus_baseline(tiny_dir, data, tmp_path, monkeypatch):
    """normalize_turn_advantages false (the demo's choice): the update gets r - b for every turn, first attempts
    r - V* exactly as without train_correction, and the per-role scaling is never called."""
    from apo.correction import CorrectionTrainingConfig

    updates = []
    original = T.update_policy

    def recording(run, optimizer, scheduler, samples, advantages, state):
        updates.append((list(samples), list(advantages)))
        return original(run, optimizer, scheduler, samples, advantages, state)

    monkeypatch.setattr(T, "update_policy", recording)
    monkeypatch.setattr(T.correction, "role_normalized_advantages",
                        lambda *args, **kwargs: pytest.fail("advantages were normalised"))
    apo, train = make_cfg(tiny_dir, data, tmp_path, train_correction=True, max_steps=1)
    write_stage1(tmp_path, data["rows"], apo)
    T.main((apo, train, CorrectionTrainingConfig(turn_baseline="running_mean", normalize_turn_advantages=False)))
    (samples, advantages), = updates
    assert {s.role for s in samples} >= {"attempt", "verify"}
    assert advantages == [s.reward - s.baseline for s in samples]


def test_balanced_verify_truth_trains_as_many_verdicts_on_right_attempts_as_on_wrong(tiny_dir, data, tmp_path,
                                                                                       monkeypatch):
    """balance_verify_truth (the demo's choice): the update gets every attempt and revision, and verify turns
    of right and wrong attempts in equal numbers, the metrics counting them; the episodes are scripted so both
    classes occur (the second and fourth verdicts labelled as checking right attempts, the rest wrong)."""
    from apo.correction import CorrectionTrainingConfig

    updates = []
    original = T.update_policy

    def recording(run, optimizer, scheduler, samples, advantages, state):
        updates.append(list(samples))
        return original(run, optimizer, scheduler, samples, advantages, state)

    real_samples = T.correction.correction_samples

    def both_classes(*args, **kwargs):  # the tiny policy is never right: label two checked attempts right
        samples, metrics = real_samples(*args, **kwargs)
        verify = [i for i, s in enumerate(samples) if s.role == "verify"]
        for n, i in enumerate(verify):
            samples[i] = dataclasses.replace(samples[i], context_correct=n in (1, 3))
        return samples, metrics

    monkeypatch.setattr(T, "update_policy", recording)
    monkeypatch.setattr(T.correction, "correction_samples", both_classes)
    apo, train = make_cfg(tiny_dir, data, tmp_path, train_correction=True, max_steps=1)
    write_stage1(tmp_path, data["rows"], apo)
    T.main((apo, train, CorrectionTrainingConfig(turn_baseline="running_mean", balance_verify_truth=True)))
    samples, = updates
    verdicts = [s.context_correct for s in samples if s.role == "verify"]
    assert verdicts.count(True) == verdicts.count(False) == 2
    assert sum(s.role == "attempt" for s in samples) == train.prompts_per_step
    record, = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "loss" in r]
    assert record["num_samples/verify_trained"] == 4 and record["num_samples/verify"] == train.prompts_per_step


def test_counterfactual_verdicts_reach_the_update(tiny_dir, data, tmp_path, monkeypatch):
    """counterfactual_verdicts (the demo's choice): each verify turn reaches the update followed by PAG's
    sentence of every verdict it did not say, rewarded by the match rule; attempts and revisions are untouched."""
    from apo.correction import VERDICT_SENTENCES, CorrectionTrainingConfig

    updates = []
    original = T.update_policy

    def recording(run, optimizer, scheduler, samples, advantages, state):
        updates.append((list(samples), run.tokenizer))
        return original(run, optimizer, scheduler, samples, advantages, state)

    monkeypatch.setattr(T, "update_policy", recording)
    apo, train = make_cfg(tiny_dir, data, tmp_path, train_correction=True, max_steps=1)
    write_stage1(tmp_path, data["rows"], apo)
    T.main((apo, train, CorrectionTrainingConfig(turn_baseline="running_mean", counterfactual_verdicts=True)))
    (samples, tokenizer), = updates
    sentences = {tuple(tokenizer.encode(t, add_special_tokens=False)) + (tokenizer.eos_token_id,): v
                 for v, t in VERDICT_SENTENCES.items()}
    verify = [s for s in samples if s.role == "verify"]
    added = [s for s in verify if tuple(s.response_ids) in sentences]
    assert sum(s.role == "attempt" for s in samples) == train.prompts_per_step
    assert len(verify) > train.prompts_per_step and len(added) >= len(verify) - train.prompts_per_step
    for sample in added:
        assert sample.reward == float((sentences[tuple(sample.response_ids)] == "correct") == sample.context_correct)


def test_counterfactual_verdicts_need_the_match_reward(tiny_dir, data, tmp_path):
    from apo.correction import CorrectionTrainingConfig

    apo, train = make_cfg(tiny_dir, data, tmp_path, train_correction=True, max_steps=1, verify_reward="outcome")
    with pytest.raises(InputError, match="counterfactual_verdicts=true needs verify_reward=match"):
        T.main((apo, train, CorrectionTrainingConfig(counterfactual_verdicts=True)))


def test_centring_without_normalising_is_refused():
    from apo.correction import CorrectionTrainingConfig

    with pytest.raises(ValueError, match="normalize_turn_advantages"):
        CorrectionTrainingConfig(center_turn_advantages=True, normalize_turn_advantages=False)


# --- issue 28: data that changed, damaged checkpoints, non-finite weights ---

def copy_data(data, folder):
    """A private copy of the data files (the module's fixture is shared), to change under a run."""
    folder.mkdir()
    copied = dict(data)
    for key in ("train_file", "eval_file"):
        copied[key] = str(folder / os.path.basename(data[key]))
        with open(data[key]) as source, open(copied[key], "w") as target:
            target.write(source.read())
    return copied


def change_answer(path, index, answer):
    rows = [json.loads(line) for line in open(path)]
    rows[index]["answer"] = answer
    with open(path, "w") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
    return rows[index]["id"]


def test_a_resume_refuses_data_whose_rows_changed_naming_the_file_and_the_first_differing_id(tiny_dir, data,
                                                                                               tmp_path):
    """Issue 28: a changed answer in the training file was resumed silently, with V* of the old gold."""
    mine = copy_data(data, tmp_path / "data")
    out = tmp_path / "out"
    run_stage2(tiny_dir, mine, out, max_steps=1, save_every=1)
    saved = json.loads((out / "checkpoint-1" / "run_config.json").read_text())["data_hashes"]
    assert saved["data_file"]["path"] == mine["train_file"] and saved["data_file"]["rows"] == 16
    changed = change_answer(mine["train_file"], 5, "123456")
    with pytest.raises(InputError, match=rf"{mine['train_file']}: row 6 \(id {changed}\) differs .*cannot resume"):
        run_stage2(tiny_dir, mine, out, max_steps=2, resume_from_checkpoint="auto")
    change_answer(mine["train_file"], 5, data["rows"][5]["answer"])  # restored: the resume goes on
    assert run_stage2(tiny_dir, mine, out, max_steps=2, resume_from_checkpoint="auto")["steps"] == 2
    changed = change_answer(mine["eval_file"], 0, "-1")
    with pytest.raises(InputError, match=rf"{mine['eval_file']}: row 1 \(id {changed}\) differs"):
        run_stage2(tiny_dir, mine, out, max_steps=3, resume_from_checkpoint="auto")


def test_stage1_values_of_changed_rows_are_not_reused(tiny_dir, data, tmp_path):
    """Issue 28: stage-1 V* sampled against an old gold answer were reused by a new run."""
    from apo.records import data_fingerprint, read_problem_rows

    mine = copy_data(data, tmp_path / "data")
    out = tmp_path / "out"
    apo, train = make_cfg(tiny_dir, mine, out)
    write_stage1(out, data["rows"], apo)
    meta = stage1.stage1_meta(apo, data_fingerprint(mine["train_file"], read_problem_rows(mine["train_file"],
                                                                                           require_answer=True)))
    (out / stage1.STAGE1_META_FILE).write_text(json.dumps(meta))
    changed = change_answer(mine["train_file"], 2, "99")
    with pytest.raises(InputError, match=rf"stage1_values.jsonl was sampled from other data \({mine['train_file']}: "
                                         rf"row 3 \(id {changed}\) differs"):
        T.main((apo, train))


def truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("use_lora, weights_file", [(False, "policy/model.safetensors"),
                                                    (True, "adapter/adapter_model.safetensors")])
def test_a_damaged_checkpoint_is_skipped_by_auto_and_named_when_given(tiny_dir, data, tmp_path, caplog, use_lora,
                                                                       weights_file):
    """Issue 28: a truncated weights file in the newest checkpoint ended the resume in a SafetensorError with no
    path."""
    run_stage2(tiny_dir, data, tmp_path, max_steps=2, save_every=1, use_lora=use_lora)
    manifest = json.loads((tmp_path / "checkpoint-2" / "manifest.json").read_text())["files"]
    assert weights_file in manifest and "trainer_state.json" in manifest
    truncate(tmp_path / "checkpoint-2" / weights_file)
    with pytest.raises(InputError, match=rf"^{tmp_path / 'checkpoint-2' / weights_file}: .* bytes, but "):
        run_stage2(tiny_dir, data, tmp_path, max_steps=3, use_lora=use_lora,
                   resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    (tmp_path / "checkpoint-2" / "manifest.json").unlink()  # a checkpoint written before the manifest
    with pytest.raises(InputError, match=rf"^{tmp_path / 'checkpoint-2' / weights_file}: not a readable safetensors"):
        run_stage2(tiny_dir, data, tmp_path, max_steps=3, use_lora=use_lora,
                   resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    caplog.set_level("INFO")
    summary = run_stage2(tiny_dir, data, tmp_path, max_steps=3, use_lora=use_lora, resume_from_checkpoint="auto")
    assert f"skipping {tmp_path / 'checkpoint-2'}, which is damaged" in caplog.text
    assert f"resumed from {tmp_path / 'checkpoint-1'} at step 1" in caplog.text
    assert summary["steps"] == 3
    assert [r["step"] for r in read_metrics(summary["metrics_file"]) if "loss" in r] == [1, 2, 3]


def test_non_finite_weights_are_never_saved(tiny_dir, data, tmp_path, monkeypatch):
    """Issue 28: an update to NaN weights (a learning rate of inf) ended with exit 0 and NaN in final/."""
    original = T.update_policy

    def poisoning_update(run, *args, **kwargs):
        result = original(run, *args, **kwargs)
        with torch.no_grad():
            next(run.unwrapped.parameters()).fill_(float("nan"))
        return result

    monkeypatch.setattr(T, "update_policy", poisoning_update)
    with pytest.raises(checkpoints.NonFiniteWeightsError, match=r"NaN or inf in 1 tensors .*best was not written"):
        run_stage2(tiny_dir, data, tmp_path, max_steps=1)
    assert not (tmp_path / "final").exists() and not (tmp_path / "best").exists()


def test_the_rollout_engine_syncs_after_a_step_deepspeed_may_have_taken():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    for kind in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.FSDP):
        accelerator = SimpleNamespace(distributed_type=kind)
        assert T.weights_may_have_changed(accelerator, True) and not T.weights_may_have_changed(accelerator, False)
    # DeepSpeed stepped inside backward: a step the trainer skips may still have moved the weights.
    assert T.weights_may_have_changed(SimpleNamespace(distributed_type=DistributedType.DEEPSPEED), False)
