"""apo.generation: the one generate of every stage. Per-prompt random streams (samples that do not
depend on batching, order or process count), the dispatch to the decoding copy and to engines, and
the rule that refuses a sharded policy. (Generation on scripted models: tests/test_episodes.py.)"""

from __future__ import annotations

import pytest
import torch

from apo.config import A_PO_Config
from apo.decoding import DecodingCopy, stream_seed, stream_uniforms
from apo.episodes import run_episodes
from apo.generation import Generation, generate, is_sharded
from apo.prompts import encode_chat

SAMPLED = dict(max_new_tokens=6, temperature=1.0, top_p=0.9)


@pytest.fixture(scope="module")
def model_and_prompts(embedded_tokenizer):
    from conftest import build_tiny_policy

    model = build_tiny_policy(embedded_tokenizer, seed=1)
    model.generation_config.eos_token_id = [embedded_tokenizer.eos_token_id] + list(range(1000, 11000))
    prompts = [encode_chat(embedded_tokenizer, [{"role": "user", "content": text}])
               for text in ("What is 1+1?", "Name a prime number larger than ten.", "Hi", "Count to three, slowly.")]
    return model, prompts


def ids(generations: list[Generation]) -> list[list[int]]:
    return [g.response_ids for g in generations]


def test_a_prompts_samples_do_not_depend_on_batching_order_or_company(model_and_prompts, embedded_tokenizer):
    model, prompts = model_and_prompts
    seeds = [11, 22, 33, 44]
    together = ids(generate(model, embedded_tokenizer, prompts, batch_size=8, num_samples=3, seeds=seeds, **SAMPLED))
    # chunks of 2 rows split a prompt's samples across chunks; reversed order; each prompt alone
    chunked = ids(generate(model, embedded_tokenizer, prompts, batch_size=2, num_samples=3, seeds=seeds, **SAMPLED))
    reverse = ids(generate(model, embedded_tokenizer, prompts[::-1], batch_size=5, num_samples=3, seeds=seeds[::-1],
                           **SAMPLED))
    alone = [r for p, s in zip(prompts, seeds)
             for r in ids(generate(model, embedded_tokenizer, [p], batch_size=1, num_samples=3, seeds=[s], **SAMPLED))]
    assert together == chunked == alone
    by_prompt = [reverse[i * 3:(i + 1) * 3] for i in range(4)][::-1]
    assert together == [r for group in by_prompt for r in group]
    assert len({len(r) for r in together}) > 1  # rows ended at different steps, so rows left the batch
    assert len({tuple(r) for r in together[:3]}) > 1  # a prompt's samples come from different streams


def test_other_seeds_give_other_samples_and_none_uses_the_torch_seed(model_and_prompts, embedded_tokenizer):
    model, prompts = model_and_prompts
    first = ids(generate(model, embedded_tokenizer, prompts, batch_size=8, seeds=[1, 2, 3, 4], **SAMPLED))
    other = ids(generate(model, embedded_tokenizer, prompts, batch_size=8, seeds=[5, 6, 7, 8], **SAMPLED))
    assert first != other
    torch.manual_seed(3)
    drawn = ids(generate(model, embedded_tokenizer, prompts, batch_size=8, **SAMPLED))
    torch.manual_seed(3)
    assert ids(generate(model, embedded_tokenizer, prompts, batch_size=2, **SAMPLED)) == drawn
    with pytest.raises(ValueError, match="3 seeds for 4 prompts"):
        generate(model, embedded_tokenizer, prompts, batch_size=8, seeds=[1, 2, 3], **SAMPLED)


def test_stream_uniforms_are_a_pure_function_of_seed_and_position():
    import numpy as np

    seeds = np.array([stream_seed(7, 0), stream_seed(7, 1), stream_seed(8, 0)], dtype=np.uint64)
    u = stream_uniforms(seeds, np.array([0, 0, 0]))
    assert len(set(u.tolist())) == 3 and ((u >= 0) & (u < 1)).all()
    assert stream_uniforms(seeds[::-1], np.array([0, 0, 0])).tolist() == u[::-1].tolist()
    many = stream_uniforms(np.full(20000, seeds[0]), np.arange(20000))
    assert abs(float(many.mean()) - 0.5) < 0.01 and abs(float((many < 0.1).mean()) - 0.1) < 0.01


def test_episode_turns_do_not_depend_on_the_other_problems(model_and_prompts, embedded_tokenizer):
    model, _ = model_and_prompts
    cfg = A_PO_Config(max_new_tokens=5, max_correction_turns=2, temperature=1.0, generation_batch_size=4)
    both = run_episodes(model, embedded_tokenizer, ["What is 1+1?", "What is 2+2?"], cfg, seeds=[5, 9])
    alone = run_episodes(model, embedded_tokenizer, ["What is 2+2?"], cfg, seeds=[9])
    assert [t.response_ids for t in both[1].turns] == [t.response_ids for t in alone[0].turns]
    assert len(both[1].turns) >= 2  # an attempt and its verification, each from its own stream


def test_generate_refuses_a_sharded_model_and_decodes_its_copy(model_and_prompts, embedded_tokenizer, tmp_path):
    model, prompts = model_and_prompts
    model.save_pretrained(tmp_path)
    copy = DecodingCopy(str(tmp_path), torch.float32)
    assert ids(generate(copy, embedded_tokenizer, prompts, batch_size=8, seeds=[1, 2, 3, 4], **SAMPLED)) == \
        ids(generate(model, embedded_tokenizer, prompts, batch_size=8, seeds=[1, 2, 3, 4], **SAMPLED))
    partitioned = copy.model
    next(partitioned.parameters()).ds_id = 0  # what deepspeed.zero.Init marks a ZeRO-3 partition with
    assert is_sharded(partitioned) and not is_sharded(model)
    with pytest.raises(ValueError, match="sharded model"):
        generate(partitioned, embedded_tokenizer, prompts, batch_size=8, **SAMPLED)


def test_anything_but_a_module_is_an_engine_with_the_generate_contract(embedded_tokenizer):
    class Engine:
        generation_config = None

        def generate(self, tokenizer, prompts, **kwargs):
            self.kwargs = kwargs
            return [Generation(list(p), [2], "", False) for p in prompts for _ in range(kwargs["num_samples"])]

    engine = Engine()
    result = generate(engine, embedded_tokenizer, [[1, 2]], batch_size=1, num_samples=2, **SAMPLED)
    assert len(result) == 2 and engine.kwargs["eos_ids"] == [embedded_tokenizer.eos_token_id]
