"""Shared fixtures: the real MATH rows (from $APO_SHARED_DATA/math; skipped when it is unset), the
shipped benchmark files, the embedded tokenizer, and a tiny in-process policy that shares its
vocabulary (fast loops without loading real weights)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# The larger data (MATH train/test, not shipped) comes from one environment variable and from nowhere else:
# APO_SHARED_DATA = a folder holding math/train.jsonl, math/test.jsonl, math/test500.jsonl (.ci/run sets it).
SHARED_DATA_ENV = "APO_SHARED_DATA"
SHARED_DATA = Path(os.environ[SHARED_DATA_ENV]) if os.environ.get(SHARED_DATA_ENV) else None
MATH_DIR = SHARED_DATA / "math" if SHARED_DATA else None
BENCHMARK_DATA = REPO_ROOT / "benchmark_data"  # the six suite files, shipped (benchmark_data/README.md)
ROW_SCHEMA = {"id", "problem", "solution", "answer", "type", "level", "source"}  # docs/ARCHITECTURE.md's data files
EMPTY_BOX_IDS = {"train/number_theory/7115.json", "train/number_theory/7117.json"}  # MATH train: \boxed{} empty
VALID_RECORD = {"problem": "What is $1 + 1$?", "level": "Level 1", "type": "Prealgebra", "solution": "$\\boxed{2}$"}


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def math_dir() -> Path:
    """Folder with train.jsonl, test.jsonl, test500.jsonl (real MATH); skips when absent."""
    if MATH_DIR is None:
        pytest.skip(f"real MATH data: {SHARED_DATA_ENV} is unset (set it to a folder holding math/train.jsonl)")
    if not (MATH_DIR / "train.jsonl").is_file():
        pytest.skip(f"real MATH data not found at {MATH_DIR} ({SHARED_DATA_ENV}={SHARED_DATA})")
    return MATH_DIR


@pytest.fixture(scope="session")
def math_train_rows(math_dir: Path) -> list[dict]:
    return read_jsonl(math_dir / "train.jsonl")


@pytest.fixture(scope="session")
def math500_rows(math_dir: Path) -> list[dict]:
    return read_jsonl(math_dir / "test500.jsonl")


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The embedded SmolLM2 tokenizer (left padding, chat template)."""
    from apo.models import load_tokenizer

    return load_tokenizer("embedded")


def build_tiny_policy(tokenizer, seed: int = 0, hidden_size: int = 64, layers: int = 2):
    """A randomly initialised 2-layer Llama over the embedded tokenizer's vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()


@pytest.fixture
def tiny_policy(embedded_tokenizer):
    return build_tiny_policy(embedded_tokenizer)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """accelerate keeps one process-wide state whose mixed precision cannot change once set; the
    trainer's 'auto' resolves to bf16 on CPUs with bfloat16 instructions and some tests pin 'no'.
    Reset it after every test so each run_main/main call starts as a new process would."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
