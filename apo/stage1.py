"""A*-PO stage 1 for train_math_apo.py: training prompts, V* from N reference samples, the value head.

Used by train_math_apo.py (`--stage 1` or `--stage all`). For every training prompt, N
responses of the reference policy are sampled, graded (a truncated response scores 0) and
reduced to V*(x) = beta1 * log mean_i exp(r_i / beta1) (`apo_algorithm.estimate_optimal_value`;
A*-PO, Brantley et al., 2025, arXiv 2505.20686). Each finished batch is appended to
`stage1_values.jsonl`, one line per prompt:

    {"id": ..., "rewards": [N floats], "v_star": float, "response_lengths": [N ints], "responses": [...]?}

so an interrupted stage 1 loses at most one batch and a re-run skips finished ids.
`stage1_meta.json` beside it records the sampling settings, the prompt format, the
reward rule and the data file's content hash; stage 2 refuses a file made with a different
model, N, prompt format (a V* of raw prompts is not the V* of chat prompts) or reward rule, and
a run refuses values sampled from rows (golds, problems) that have changed since. The value
head (a small MLP on the reference policy's last hidden state at the final prompt token) is fit
to V* on a train/held-out split and saved under value_head/ with its held-out MSE, MAE and correlation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os

import numpy as np
import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from apo_algorithm import (ValueHead, estimate_optimal_value, evaluate_value_head, fit_value_head, prompt_hidden_states,
                           reference_model)
from apo.decoding import left_pad
from apo.generation import generate
from apo.prompts import encode_problem
from apo.strict_grading import rewards_by_rule
from apo.checkpoints import staged_folder
from apo.data_order import sample_seed
from apo.errors import InputError, InputFileNotFoundError
from apo.records import append_jsonl, data_difference, read_stage1_values, write_json_atomic

logger = logging.getLogger(__name__)

STAGE1_FILE = "stage1_values.jsonl"
STAGE1_META_FILE = "stage1_meta.json"
VALUE_HEAD_DIR = "value_head"
VALUE_HEAD_INFO = "fit_info.json"
META_KEYS = ("model", "num_value_samples", "temperature", "top_p", "max_new_tokens", "system_prompt", "prompt_format",
             "reward_rule")
# Values of keys a stage1_meta.json written before the key existed implies (the only behaviour then).
LEGACY_META = {"prompt_format": "chat", "reward_rule": "grade"}


# --- training prompts (read with apo.records.read_problem_rows) ---

def encode_problems(rows: list[dict], tokenizer, apo) -> tuple[list[dict], list[list[int]], list[str]]:
    """(kept rows, their first-turn prompt ids in apo.prompt_format (apo.prompts.encode_problem),
    ids of the dropped rows): prompts longer than apo.max_prompt_length tokens are dropped, and
    their ids logged."""
    kept, prompts, dropped = [], [], []
    for row in rows:
        ids = encode_problem(tokenizer, row["problem"], apo.prompt_format, apo.system_prompt)
        if len(ids) <= apo.max_prompt_length:
            kept.append(row)
            prompts.append(ids)
        else:
            dropped.append(row["id"])
    if dropped:
        shown = ", ".join(dropped[:20]) + (f" and {len(dropped) - 20} more" if len(dropped) > 20 else "")
        logger.warning("dropped %d of %d prompts longer than max_prompt_length=%d tokens: %s", len(dropped),
                       len(rows), apo.max_prompt_length, shown)
    return kept, prompts, dropped


# --- stage 1: V* from N reference samples ---

def stage1_meta(apo, data_file: dict | None = None) -> dict:
    """stage1_meta.json: the settings of META_KEYS and, as "data_file", the content hash of the data
    file the values were sampled from (apo.records.data_fingerprint)."""
    return {key: getattr(apo, key) for key in META_KEYS} | ({"data_file": data_file} if data_file else {})


def stage1_meta_differences(path: str, apo) -> dict:
    """{setting: (saved, now)} where the stage1_meta.json beside `path` differs from `apo` ({} when
    it matches or there is none)."""
    meta_path = os.path.join(os.path.dirname(path), STAGE1_META_FILE)
    if not os.path.isfile(meta_path):
        return {}
    with open(meta_path, encoding="utf-8") as handle:
        saved = json.load(handle)
    expected = stage1_meta(apo)
    saved = {**LEGACY_META, **saved}
    return {key: (saved.get(key), expected[key]) for key in META_KEYS if saved.get(key) != expected[key]}


def check_stage1_meta(path: str, apo) -> None:
    """Raise InputError when the stage1_meta.json beside `path` records other sampling settings."""
    differing = stage1_meta_differences(path, apo)
    if differing:
        raise InputError(f"{path} {_sampled_with_other_settings(differing)}; use another --output_dir, pass "
                         "--overwrite_output_dir (removes the old run's files) to re-sample, or restore the settings")


def _sampled_with_other_settings(differing: dict) -> str:
    mixed = " (prompt_format: stage 1 and stage 2 must use one prompt format)" if "prompt_format" in differing else ""
    return f"was sampled with other settings{mixed} (saved, now): {differing}"


def stage1_conflict(path: str, apo, data_ids: set[str], data: tuple[str, list[dict]] | None = None) -> str | None:
    """Why the stage-1 values at `path` cannot serve a run with settings `apo` on the problems
    `data_ids` (other sampling settings, ids that are not in the data file, or, given `data` =
    (data file, its rows), rows that differ from those the values were sampled from, naming the
    first differing id); None when they can or there is no file."""
    if not os.path.isfile(path):
        return None
    differing = stage1_meta_differences(path, apo)
    if differing:
        return f"{os.path.basename(path)} {_sampled_with_other_settings(differing)}"
    meta_path, saved = os.path.join(os.path.dirname(path), STAGE1_META_FILE), None
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as handle:
            saved = json.load(handle).get("data_file")
    difference = data_difference(saved, *data) if saved and data else None
    if difference:
        return f"{os.path.basename(path)} was sampled from other data ({difference})"
    foreign = sorted(set(read_stage1_values(path, apo.num_value_samples)) - data_ids)
    if foreign:
        return f"{os.path.basename(path)} holds {len(foreign)} ids that are not in the data file (e.g. {foreign[:3]})"
    return None


@contextlib.contextmanager
def reference_policy(run):
    """The reference policy pi_ref of a run: `apo_algorithm.reference_model` (the frozen copy, or
    the LoRA policy with adapters disabled), except for full fine-tuning in stage 1 alone, where
    `apo.models.build_models` loads no copy and the policy, which stage 1 never updates, is pi_ref."""
    if run.ref_model is None and not run.apo.use_lora and run.train.stage == "1":
        yield run.unwrapped
        return
    with reference_model(run.unwrapped, run.ref_model) as model:
        yield model


@contextlib.contextmanager
def reference_generator(run):
    """What stage 1 samples pi_ref with: the rollout engine (the vLLM engine or the decoding copy of
    `--rollout_dtype`), which holds the model folder's weights until stage 2's first update, else
    `reference_policy(run)`."""
    if run.engine is None:
        with reference_policy(run) as model:
            yield model
        return
    if run.engine.weight_updates:
        raise RuntimeError("stage 1 must sample the reference policy, but the rollout engine already holds "
                           "updated policy weights; run stage 1 before stage 2")
    yield run.engine


def sample_values(run, rows: list[dict], prompts: list[list[int]], seeds: list[int] | None = None) -> list[dict]:
    """Stage-1 records of `rows`: N graded samples each from the reference policy (prompt i from
    the random streams of `seeds[i]`, see apo.generation; None: the global torch RNG)."""
    apo, n = run.apo, run.apo.num_value_samples
    if not rows:
        return []
    with reference_generator(run) as model:
        generations = generate(model, run.tokenizer, prompts, num_samples=n, max_new_tokens=apo.max_new_tokens,
                               temperature=apo.temperature, top_p=apo.top_p, batch_size=apo.generation_batch_size,
                               seeds=seeds)
    correct = rewards_by_rule([g.text for g in generations], [row["answer"] for row in rows for _ in range(n)],
                              [g.truncated for g in generations], apo, run.grading)
    rewards = torch.tensor([float(ok) for ok in correct]).view(-1, n)
    v_star = estimate_optimal_value(rewards, apo.beta1)  # (B,)
    records = []
    for index, row in enumerate(rows):
        group = generations[index * n:(index + 1) * n]
        record = {"id": row["id"], "rewards": rewards[index].tolist(), "v_star": float(v_star[index]),
                  "response_lengths": [len(g.response_ids) for g in group]}
        if run.train.save_stage1_responses:
            record["responses"] = [g.text for g in group]
        records.append(record)
    return records


def run_stage1(run, rows: list[dict], prompts: list[list[int]], path: str) -> None:
    """Append the records of every prompt not yet in `path`, batch by batch (see the module docstring)."""
    accelerator, cfg = run.accelerator, run.train
    rank, world = accelerator.process_index, accelerator.num_processes
    if accelerator.is_main_process:
        check_stage1_meta(path, run.apo)
        write_json_atomic(os.path.join(os.path.dirname(path), STAGE1_META_FILE),
                          stage1_meta(run.apo, run.data_hashes.get("data_file")))
    done = set(read_stage1_values(path, run.apo.num_value_samples)) if os.path.isfile(path) else set()
    accelerator.wait_for_everyone()
    pending = [i for i, row in enumerate(rows) if row["id"] not in done]
    logger.info("stage 1: %d prompts done, %d to sample (N=%d)", len(rows) - len(pending), len(pending),
                run.apo.num_value_samples)
    per_batch = cfg.stage1_batch_size * world
    batches = [pending[start:start + per_batch] for start in range(0, len(pending), per_batch)]
    for batch in tqdm(batches, desc="stage 1", unit="batch", disable=not accelerator.is_main_process):
        mine = batch[rank::world]
        # One stream per prompt, seeded by its index: a resumed stage 1 samples what an uninterrupted one
        # would, and 1 or 8 processes sample the same responses.
        seeds = [sample_seed(run.apo.seed + 1, 0, i) for i in mine]
        records = gather_object(sample_values(run, [rows[i] for i in mine], [prompts[i] for i in mine], seeds))
        if accelerator.is_main_process:
            append_jsonl(path, records)
    accelerator.wait_for_everyone()


def load_stage1(path: str, all_ids: set[str], train_ids: list[str], apo) -> dict[str, dict]:
    """Stage-1 records for stage 2, with V* recomputed from the rewards at the current beta1.

    Raises InputFileNotFoundError when `path` is missing, InputError when it was made with other
    settings, holds ids that are not in the data file, or covers none of the training prompts.
    """
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"{path} not found: stage 2 needs stage 1's V* values; run with --stage 1 or "
                                "--stage all and the same --output_dir first")
    check_stage1_meta(path, apo)
    records = read_stage1_values(path, apo.num_value_samples)
    foreign = sorted(set(records) - all_ids)
    if foreign:
        raise InputError(f"{path} holds {len(foreign)} ids that are not in the data file (e.g. {foreign[:3]}): it "
                         "was made from another data file; use another --output_dir or delete it to re-sample")
    if train_ids and not set(train_ids) & set(records):
        raise InputError(f"{path} covers none of the {len(train_ids)} training prompts; run stage 1 for them")
    for record in records.values():
        record["v_star"] = float(estimate_optimal_value(torch.tensor(record["rewards"]), apo.beta1))
    return records


# --- the value head ---

def reference_features(run, prompts: list[list[int]]) -> torch.Tensor:
    """(len(prompts), H) float32 hidden states of the reference policy at each prompt's last
    token; every process computes a share and all receive the whole."""
    rank, world = run.accelerator.process_index, run.accelerator.num_processes
    mine = list(range(rank, len(prompts), world))
    size = run.apo.generation_batch_size
    results = []
    with reference_policy(run) as model:
        for start in range(0, len(mine), size):
            chunk = mine[start:start + size]
            ids, mask = left_pad([prompts[i] for i in chunk], run.tokenizer.pad_token_id)
            hidden = prompt_hidden_states(model, ids, mask).cpu()
            results += [(i, hidden[row]) for row, i in enumerate(chunk)]
    gathered = sorted(gather_object(results), key=lambda pair: pair[0])
    return torch.stack([h for _, h in gathered]) if gathered else torch.zeros(0)


def _fit_key(ids: list[str], apo) -> str:
    text = json.dumps([sorted(ids), apo.beta1, apo.value_head_hidden_size, apo.value_epochs,
                       apo.value_learning_rate, apo.value_holdout_fraction, apo.seed])
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_value_head(run, rows: list[dict], prompts: list[list[int]], records: dict[str, dict]):
    """(ValueHead, held-out metrics) fit to V* of the training prompts that have records, or
    loaded from value_head/ when it was fit on the same prompts and settings. (None, None)
    when no prompt has a record."""
    apo, folder = run.apo, os.path.join(run.train.output_dir, VALUE_HEAD_DIR)
    indices = [i for i, row in enumerate(rows) if row["id"] in records]
    if not indices:
        return None, None
    key = _fit_key([rows[i]["id"] for i in indices], apo)
    info_path = os.path.join(folder, VALUE_HEAD_INFO)
    if os.path.isfile(info_path):
        with open(info_path, encoding="utf-8") as handle:
            info = json.load(handle)
        if info.get("key") == key:
            return ValueHead.load(folder), info["metrics"]
    features = reference_features(run, [prompts[i] for i in indices])
    targets = torch.tensor([records[rows[i]["id"]]["v_star"] for i in indices])
    order = np.random.default_rng(apo.seed).permutation(len(indices))
    held = int(round(apo.value_holdout_fraction * len(indices)))
    held = held if len(indices) - held >= 1 else 0
    train_part, held_part = torch.as_tensor(order[held:]), torch.as_tensor(order[:held])
    torch.manual_seed(apo.seed)
    head = ValueHead(features.shape[1], apo.value_head_hidden_size)
    losses = fit_value_head(head, features[train_part], targets[train_part], apo.value_learning_rate,
                            apo.value_epochs, run.train.value_batch_size, apo.seed)
    metrics = {"train": evaluate_value_head(head, features[train_part], targets[train_part]),
               "held_out": evaluate_value_head(head, features[held_part], targets[held_part]) if held else None,
               "final_train_loss": losses[-1], "v_star_mean": float(targets.mean())}
    if held:
        logger.info("value head on %d held-out prompts: mse %.4f | mae %.4f | corr %s", held,
                    metrics["held_out"]["mse"], metrics["held_out"]["mae"], metrics["held_out"]["corr"])
    else:
        logger.warning("value head: no held-out prompts (value_holdout_fraction=%s, %d prompts); only training "
                       "error is reported", apo.value_holdout_fraction, len(indices))
    accelerator = run.accelerator
    with staged_folder(folder, accelerator.is_main_process, accelerator.wait_for_everyone) as staging:
        if accelerator.is_main_process:
            head.save(staging)
            write_json_atomic(os.path.join(staging, VALUE_HEAD_INFO), {"key": key, "metrics": metrics})
    return head, metrics


# --- stage 2's baselines ---

def stage2_baselines(run, rows: list[dict], prompts: list[list[int]], records: dict[str, dict], head):
    """(indices of rows kept for stage 2, V* per row, counts).

    V* is the sampled stage-1 value (value_source='samples') or the value head's prediction
    (value_source='head', and for prompts without a stage-1 record). filter_all_incorrect
    drops prompts whose N samples all failed. Raises InputError when a prompt needs the head
    and there is none.
    """
    apo = run.apo
    use_head = [i for i, row in enumerate(rows) if apo.value_source == "head" or row["id"] not in records]
    v_star = [records[row["id"]]["v_star"] if row["id"] in records else float("nan") for row in rows]
    if use_head:
        if head is None:
            raise InputError(f"{len(use_head)} training prompts have no stage-1 record and there is no value head; "
                             "run stage 1 on them (--stage 1 or all)")
        with torch.no_grad():
            predicted = head(reference_features(run, [prompts[i] for i in use_head])).tolist()
        for i, value in zip(use_head, predicted):
            v_star[i] = float(value)
    all_fail = {i for i, row in enumerate(rows) if row["id"] in records and max(records[row["id"]]["rewards"]) == 0}
    keep = [i for i in range(len(rows)) if not (apo.filter_all_incorrect and i in all_fail)]
    counts = {"stage2_prompts": len(keep), "all_incorrect_prompts": len(all_fail),
              "filtered_all_incorrect": len(rows) - len(keep), "v_star_from_head": len(use_head)}
    logger.info("stage 2 prompts: %d (%d all-incorrect in stage 1, %d filtered out; V* from the value head for %d)",
                counts["stage2_prompts"], counts["all_incorrect_prompts"], counts["filtered_all_incorrect"],
                counts["v_star_from_head"])
    return keep, v_star, counts
