"""Benchmark: the context length of a later self-correction turn, re-rendered against ids kept.

This project builds each verify and revise turn's context by re-rendering the conversation
(the decoded text of every earlier turn) through the chat template (apo.episodes). PAG keeps
the sampled token ids instead and appends a template fragment for the next user turn
(github Jackory/Policy-As-GenVerifier, verl/workers/rollout/vllm_rollout/vllm_pag_rollout_spmd.py:
`_get_template_tokens` lines 178-197, the history built at lines 326-335 and 385-394): the
response's ids up to and including the first EOS (a truncated response has no end-of-turn
token), then "\\n\\n" + the user turn rendered by the chat template without its system block,
ending in the assistant's generation prompt.

This script plays real episodes (apo.episodes.run_episodes, every attempt verified so that
both later roles occur) and counts, for every later turn, the tokens of the context it was
given (re-rendered) and of the context PAG would have built from the same sampled ids
(ids kept), and per earlier response the tokens of its decoded text re-encoded against the
ids sampled. It changes nothing in the project; docs/REPRODUCING.md quotes its numbers.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_context_ids.py --problems_file PATH/test500.jsonl
    .venv/bin/python bench/bench_context_ids.py                     # synthetic problems, no data needed
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apo.config import A_PO_Config, config_to_dict, parse_config  # noqa: E402
from apo.records import write_json_atomic  # noqa: E402

BENCH_DEFAULTS = [
    "--model", "embedded", "--correction_mode", "self_verify", "--max_correction_turns", "2",
    "--verify_final_attempt", "true", "--max_new_tokens", "256", "--temperature", "1.0", "--top_p", "1.0",
    "--generation_batch_size", "16",
]


@dataclass
class BenchConfig:
    """Which problems, how many, and where the result goes."""

    problems_file: str = field(default="", metadata={"help": (
        "JSONL problem rows (e.g. MATH-500's test500.jsonl); '' = synthetic problems (apo.synthetic).")})
    num_problems: int = field(default=32, metadata={"help": "Episodes played (the file's first rows)."})
    output_json: str = field(default=os.path.join("runs", "bench_context_ids.json"), metadata={"help": "Result file."})


def pag_fragment(tokenizer, user_text: str) -> list[int]:
    """PAG's `_get_template_tokens`: "\\n\\n" + the chat template of one user turn with the
    generation prompt, its leading system block (which the template adds by default) removed."""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)
    if rendered.startswith("<|im_start|>system"):
        rendered = rendered[rendered.find("<|im_end|>") + len("<|im_end|>"):].lstrip()
    return tokenizer.encode("\n\n" + rendered, add_special_tokens=False)


def measure(episodes, tokenizer, cfg: A_PO_Config, eos_ids: list[int]) -> dict:
    """Per later turn: (role, re-rendered length, ids-kept length); per earlier response: the
    decoded text's token count against the sampled ids (without the EOS)."""
    fragments = {"verify": pag_fragment(tokenizer, cfg.verify_prompt), "revise": pag_fragment(tokenizer, cfg.revise_prompt)}
    contexts, responses = [], []
    for episode in episodes:
        kept = list(episode.turns[0].prompt_ids)
        for index, turn in enumerate(episode.turns):
            if index > 0:
                contexts.append({"role": turn.role, "rerendered": len(turn.prompt_ids), "ids_kept": len(kept),
                                 "earlier_truncated": sum(t.truncated for t in episode.turns[:index])})
            sampled = [t for t in turn.response_ids if t not in eos_ids]
            responses.append({"role": turn.role, "truncated": turn.truncated, "sampled": len(sampled),
                              "reencoded": len(tokenizer.encode(turn.text, add_special_tokens=False))})
            kept += turn.response_ids  # up to and including the first EOS; none when truncated
            if index + 1 < len(episode.turns):
                kept += fragments[episode.turns[index + 1].role]
    return {"contexts": contexts, "responses": responses}


def summarise(rows: list[dict], left: str, right: str) -> dict:
    differences = [row[left] - row[right] for row in rows]
    return {"n": len(rows), f"mean_{left}": statistics.fmean(row[left] for row in rows) if rows else None,
            f"mean_{right}": statistics.fmean(row[right] for row in rows) if rows else None,
            "mean_difference": statistics.fmean(differences) if rows else None,
            "min_difference": min(differences, default=None), "max_difference": max(differences, default=None),
            "share_differing": sum(d != 0 for d in differences) / len(rows) if rows else None}


def main(cfg: tuple[A_PO_Config, BenchConfig]) -> dict:
    apo, bench = cfg
    import torch

    from apo.episodes import eos_token_ids, run_episodes
    from apo.models import load_model, load_tokenizer
    from apo.records import read_problem_rows
    from apo.synthetic import generate_problems

    # --- problems and model ---
    if bench.problems_file:
        rows = read_problem_rows(bench.problems_file, require_answer=False, limit=bench.num_problems)
    else:
        rows = generate_problems(bench.num_problems, apo.seed, levels=(1, 2, 3), types=("arithmetic", "fractions"))
    tokenizer = load_tokenizer(apo.model, apo.model_cache_dir)
    policy = load_model(apo.model, apo.model_cache_dir, dtype="float32")

    # --- episodes ---
    torch.manual_seed(apo.seed)
    started = time.perf_counter()
    episodes = run_episodes(policy, tokenizer, [row["problem"] for row in rows], apo, unparsed_verdict_revises=True)
    seconds = time.perf_counter() - started

    # --- the two context constructions ---
    measured = measure(episodes, tokenizer, apo, eos_token_ids(policy, tokenizer))
    result = {"settings": config_to_dict(apo, bench), "seconds_generating": seconds, "episodes": len(episodes),
              "contexts": {role: summarise([c for c in measured["contexts"] if c["role"] == role],
                                           "rerendered", "ids_kept") for role in ("verify", "revise")},
              "contexts_after_a_truncated_turn": summarise(
                  [c for c in measured["contexts"] if c["earlier_truncated"]], "rerendered", "ids_kept"),
              "responses": {kind: summarise([r for r in measured["responses"] if r["truncated"] == cut],
                                            "reencoded", "sampled")
                            for kind, cut in (("finished", False), ("truncated", True))},
              "rows": measured}
    print("| | n | re-rendered (mean) | ids kept (mean) | difference mean [min, max] | share differing |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, stats in [*result["contexts"].items(), ("after a truncated turn",
                                                       result["contexts_after_a_truncated_turn"])]:
        if stats["n"]:
            print(f"| {name} context | {stats['n']} | {stats['mean_rerendered']:.1f} | {stats['mean_ids_kept']:.1f} | "
                  f"{stats['mean_difference']:+.2f} [{stats['min_difference']}, {stats['max_difference']}] | "
                  f"{stats['share_differing']:.2f} |")
    for name, stats in result["responses"].items():
        if stats["n"]:
            print(f"| {name} responses: text re-encoded vs ids sampled | {stats['n']} | {stats['mean_reencoded']:.1f} "
                  f"| {stats['mean_sampled']:.1f} | {stats['mean_difference']:+.2f} "
                  f"[{stats['min_difference']}, {stats['max_difference']}] | {stats['share_differing']:.2f} |")
    os.makedirs(os.path.dirname(os.path.abspath(bench.output_json)), exist_ok=True)
    write_json_atomic(bench.output_json, result)
    print(f"{len(episodes)} episodes in {seconds:.0f} s; written {bench.output_json}")
    return result


if __name__ == "__main__":
    main(parse_config((A_PO_Config, BenchConfig), BENCH_DEFAULTS + sys.argv[1:]))
