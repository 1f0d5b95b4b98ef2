"""A_PO_Config and the shared defaults < YAML < flags parsing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

import dataclasses
import re
import subprocess
import sys

from apo_algorithm import A_PO_Config
from apo.config import ALGORITHM_GROUPS, SCRIPT_GROUPS, EpisodeConfig, ModelConfig, parse_config, parse_script_config, save_config
from apo.errors import InputError
from conftest import REPO_ROOT


@dataclass
class _ScriptConfig:
    data_file: str = field(default="math_prompts_responses.jsonl", metadata={"help": "training rows"})
    epochs: int = field(default=1, metadata={"help": "passes"})
    pass_k: list[int] = field(default_factory=lambda: [1], metadata={"help": "k values"})
    share: float = field(default=0.5, metadata={"help": "share of problems, e.g. 0.5 = 50% of them"})


def test_the_seed_readme_example_works_as_written():
    config = A_PO_Config(value_learning_rate=1e-4, policy_learning_rate=5e-5, max_correction_turns=3,
                         advantage_clip=10.0)
    assert (config.value_learning_rate, config.policy_learning_rate) == (1e-4, 5e-5)
    assert (config.max_correction_turns, config.advantage_clip) == (3, 10.0)
    # paper defaults (ALGORITHM.md): N = 8, beta1 = 0.5, beta2 = 1e-3, the A*-PO regression
    assert (config.num_value_samples, config.beta1, config.beta2, config.policy_loss) == (8, 0.5, 1e-3, "apo")


@pytest.mark.parametrize("kwargs, field_name", [
    ({"beta2": 0.0}, "beta2"), ({"beta1": -1.0}, "beta1"), ({"top_p": 1.5}, "top_p"),
    ({"max_correction_turns": 0}, "max_correction_turns"), ({"num_value_samples": 0}, "num_value_samples"),
    ({"train_correction": True, "correction_mode": "oracle"}, "train_correction"),
])
def test_invalid_values_name_the_field_and_the_value(kwargs, field_name):
    with pytest.raises(ValueError, match=rf"A_PO_Config\.{field_name}=.* is invalid: "):
        A_PO_Config(**kwargs)


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("beta2: 0.01\nuse_lora: false\nepochs: 5\ndata_file: from_yaml.jsonl\npass_k: [1, 8]\n")
    apo, script = parse_config((A_PO_Config, _ScriptConfig),
                               ["--config", str(run), "--epochs", "2", "--data_file", "math_subset.jsonl"])
    assert apo.beta2 == 0.01 and apo.use_lora is False          # from the YAML
    assert script.epochs == 2 and script.data_file == "math_subset.jsonl"  # flags win
    assert script.pass_k == [1, 8]                              # YAML lists become one argument per item
    assert apo.beta1 == 0.5                                     # default kept


def test_unknown_keys_are_errors(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("beta_2: 0.01\n")
    with pytest.raises(ValueError, match="unknown keys \\['beta_2'\\]"):
        parse_config((A_PO_Config,), ["--config", str(run)])
    with pytest.raises(ValueError, match="unknown command-line arguments for train.py: --epochz 3"):
        parse_config((A_PO_Config, _ScriptConfig), ["--epochz", "3"], script="train.py")


def test_choices_are_enforced_by_the_parser():
    with pytest.raises(SystemExit):
        parse_config((A_PO_Config,), ["--policy_loss", "ppo"])


def test_save_config_writes_the_resolved_values(tmp_path):
    apo, script = parse_config((A_PO_Config, _ScriptConfig), ["--beta2", "0.002", "--epochs", "3"])
    path = tmp_path / "sub" / "config.json"
    save_config(str(path), apo, script)
    saved = json.loads(path.read_text())
    assert saved["beta2"] == 0.002 and saved["epochs"] == 3 and saved["model"] == apo.model
    assert not list(path.parent.glob(".tmp-*"))  # the temporary file was renamed, not left behind


def test_help_lists_every_field_even_with_a_percent_sign_in_its_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config((A_PO_Config, _ScriptConfig), ["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert "50% of them" in shown and "--beta2" in shown and "(default: 0.001)" in shown


# --- groups: each script parses only what it uses ---

def _names(*types) -> set[str]:
    return {f.name for t in types for f in dataclasses.fields(t)}


def test_a_po_config_is_exactly_the_union_of_its_groups():
    assert _names(A_PO_Config) == _names(*ALGORITHM_GROUPS)
    assert sum(len(dataclasses.fields(group)) for group in ALGORITHM_GROUPS) == len(dataclasses.fields(A_PO_Config))
    merged = A_PO_Config.from_groups(ModelConfig(model="embedded"), EpisodeConfig(max_correction_turns=3))
    assert (merged.model, merged.max_correction_turns, merged.beta2) == ("embedded", 3, 1e-3)


def test_evaluate_parses_only_its_groups_and_names_the_flag_it_uses_instead():
    cfg, eval_cfg = parse_script_config("evaluate_apo.py", (_ScriptConfig,), ["--model", "embedded", "--seed", "3"])
    assert isinstance(cfg, A_PO_Config) and (cfg.model, cfg.seed) == ("embedded", 3)
    with pytest.raises(ValueError) as error:
        parse_script_config("evaluate_apo.py", (), ["--eval_max_new_tokens", "5", "--max_new_tokens", "128"])
    message = str(error.value)
    assert "--max_new_tokens is read by train_math_apo.py (SamplingConfig), not by evaluate_apo.py" in message


def test_a_yaml_key_of_another_script_names_that_script(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("model: embedded\nbeta2: 0.01\n")
    with pytest.raises(ValueError, match=r"unknown keys \['beta2'\] for evaluate_apo.py \(--beta2 is read by "
                                         r"train_math_apo.py \(APOConfig\)"):
        parse_script_config("evaluate_apo.py", (), ["--config", str(run)])


@pytest.mark.parametrize("script, shown, hidden", [
    ("evaluate_apo.py", ["--eval_max_new_tokens", "--correction_mode", "--grading_timeout", "--model"],
     ["--beta2", "--policy_learning_rate", "--lora_r", "--max_new_tokens", "--num_value_samples"]),
    ("train_math_apo.py", ["--beta2", "--lora_r", "--max_new_tokens", "--prompts_per_step", "--turn_baseline"],
     ["--eval_max_new_tokens", "--num_samples"]),
])
def test_each_script_help_lists_what_it_uses(script, shown, hidden):
    result = subprocess.run([sys.executable, script, "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    flags = set(re.findall(r"--[a-z0-9_]+", result.stdout))
    assert set(shown) <= flags, set(shown) - flags
    assert not set(hidden) & flags, set(hidden) & flags


def test_every_script_group_is_a_group_of_a_po_config():
    for groups in SCRIPT_GROUPS.values():
        assert set(groups) <= set(ALGORITHM_GROUPS)


def _code_outside_config() -> str:
    paths = [*REPO_ROOT.glob("*.py"), *(REPO_ROOT / "apo").glob("*.py")]
    return "\n".join(path.read_text(encoding="utf-8") for path in paths if path.name != "config.py"
                     or path.parent.name != "apo")


def test_every_config_field_is_read_somewhere_outside_the_config_module():
    """A field nobody reads is a documented knob that does nothing (center_turn_advantages was one)."""
    from apo.correction import CorrectionTrainingConfig

    code = _code_outside_config()
    unread = sorted(name for name in _names(A_PO_Config, CorrectionTrainingConfig)
                    if not re.search(rf"\.{name}\b|[\"']{name}[\"']", code))
    assert not unread, f"config fields never read outside apo/config.py: {unread}"


def test_the_unread_field_check_can_fail():
    code = _code_outside_config()
    assert not re.search(r"\.no_such_knob_anywhere\b", code)


@pytest.mark.parametrize("argv, expected", [([], None), (["--gradient_checkpointing", "true"], True),
                                            (["--gradient_checkpointing", "false"], False)])
def test_gradient_checkpointing_is_unset_true_or_false_from_the_command_line_and_yaml(tmp_path, argv, expected):
    (apo,) = parse_config((A_PO_Config,), argv)
    assert apo.gradient_checkpointing is expected
    run = tmp_path / "run.yaml"
    save_config(run, apo)
    (again,) = parse_config((A_PO_Config,), ["--config", str(run)])
    assert again.gradient_checkpointing is expected


def test_a_null_yaml_value_is_refused_where_the_default_is_not_unset(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("beta2: null\n")
    with pytest.raises(InputError, match="beta2 is null"):
        parse_config((A_PO_Config,), ["--config", str(run)])


@pytest.mark.parametrize("kwargs, field_name", [
    ({"temperature": 0.0, "num_value_samples": 8}, "num_value_samples"),  # stage 1's n at greedy
    ({"temperature": 0.005}, "temperature"),  # above 2 every backend refuses (the field's bounds)
])
def test_vllm_refuses_at_parse_time_the_sampling_vllm_would_refuse_mid_run(kwargs, field_name):
    with pytest.raises(InputError, match=rf"A_PO_Config\.{field_name}=.* is invalid: --generation_backend vllm"):
        A_PO_Config(generation_backend="vllm", **kwargs)
    assert A_PO_Config(**kwargs).generation_backend == "hf"  # the hf path samples them
    with pytest.raises(InputError, match=rf"--{field_name}=|{field_name}="):
        parse_script_config("train_math_apo.py", (), ["--generation_backend", "vllm"]
                            + [f"--{k}={v}" for k, v in kwargs.items()])
    assert A_PO_Config(generation_backend="vllm", temperature=0.0, num_value_samples=1).temperature == 0.0
    assert A_PO_Config(generation_backend="vllm", temperature=2.0).temperature == 2.0


def test_evaluate_refuses_an_eval_temperature_vllm_would_refuse(tmp_path):
    import evaluate_apo

    cfg, eval_cfg = parse_script_config("evaluate_apo.py", (evaluate_apo.EvalConfig,), [
        "--generation_backend", "vllm", "--eval_temperature", "0.005", "--num_samples", "4", "--pass_k", "1",
        "--output_dir", str(tmp_path / "out")])
    with pytest.raises(InputError, match=r"EvalConfig\.eval_temperature=0\.005 is invalid: --generation_backend vllm"):
        evaluate_apo.main(cfg, eval_cfg)  # before require_vllm: this machine has no vllm


# --- issue 28: one range rule for every float field ---

def _script_configs() -> dict[str, tuple[type, ...]]:
    """Each script's own config classes, parsed on top of its SCRIPT_GROUPS."""
    import demo_apo_pipeline
    import evaluate_apo
    import prepare_data
    import train_math_apo
    from apo.correction import CorrectionTrainingConfig

    return {"train_math_apo.py": (train_math_apo.TrainConfig, CorrectionTrainingConfig),
            "evaluate_apo.py": (evaluate_apo.EvalConfig,), "prepare_data.py": (prepare_data.DataConfig,),
            "demo_apo_pipeline.py": (demo_apo_pipeline.DemoConfig,)}


def _float_fields(script: str) -> list[tuple[type, str]]:
    types = SCRIPT_GROUPS[script] + _script_configs()[script]
    return [(t, f.name) for t in types for f in dataclasses.fields(t) if f.type in (float, "float")]


def test_every_float_field_of_every_config_declares_its_interval():
    every = [pair for script in SCRIPT_GROUPS for pair in _float_fields(script)]
    assert len(every) >= 20
    assert [f"{t.__name__}.{name}" for t, name in every
            if "bounds" not in {f.name: f for f in dataclasses.fields(t)}[name].metadata] == []


@pytest.mark.parametrize("script", sorted(SCRIPT_GROUPS))
@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_no_float_flag_takes_a_non_finite_value(script, value):
    """Issue 28: --policy_learning_rate inf, --beta2 inf, --max_grad_norm inf, --grading_timeout inf were accepted."""
    for group, name in _float_fields(script):
        with pytest.raises(InputError, match=rf"\.{name}=.* is invalid"):
            argv = [f"--{name}={value}"]  # "=": argparse reads a lone "-inf" as a flag
            parse_script_config(script, _script_configs()[script], argv) if script in (
                "train_math_apo.py", "evaluate_apo.py") else parse_config(_script_configs()[script], argv)


@pytest.mark.parametrize("script, argv, message", [
    ("train_math_apo.py", ["--policy_learning_rate", "inf"], "OptimizerConfig.policy_learning_rate=inf"),
    ("train_math_apo.py", ["--temperature", "inf"], "SamplingConfig.temperature=inf"),
    ("train_math_apo.py", ["--temperature", "5"], "SamplingConfig.temperature=5.0"),
    ("train_math_apo.py", ["--beta2", "inf"], "APOConfig.beta2=inf"),
    ("train_math_apo.py", ["--max_grad_norm", "inf"], "OptimizerConfig.max_grad_norm=inf"),
    ("train_math_apo.py", ["--grading_timeout", "inf"], "RunConfig.grading_timeout=inf"),
    ("evaluate_apo.py", ["--eval_temperature", "5"], "EvalConfig.eval_temperature=5.0"),
    ("evaluate_apo.py", ["--grading_timeout", "inf"], "RunConfig.grading_timeout=inf"),
])
def test_the_reported_impossible_values_are_refused_in_one_line(script, argv, message, monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
    assert stopped.value.code == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"error: {message} is invalid: use a finite number in ")


def test_the_interval_is_in_the_help_and_notebook_configs_obey_it():
    result = subprocess.run([sys.executable, "train_math_apo.py", "--help"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert "Range: [0, 2]." in " ".join(result.stdout.split())
    with pytest.raises(InputError, match=r"A_PO_Config\.temperature=2.5 is invalid: use a finite number in \[0, 2\]"):
        A_PO_Config(temperature=2.5)
    assert A_PO_Config(temperature=2.0, beta1=0).temperature == 2.0  # both ends of [0, 2] are in it
