"""apo.benchmarks: the shared benchmark files load as eval rows, hub records convert to the same rows
(load_dataset replaced by in-process records: the hub is not reachable here), bad rows are named, and
the protocols carry their settings and sources."""

from __future__ import annotations

import json

import pytest

import apo.benchmarks as bm
from conftest import BENCHMARK_DATA

BENCHMARK_DIR = BENCHMARK_DATA
ROW_COUNTS = {"math500": 500, "minerva_math": 272, "olympiadbench": 675, "amc23": 40, "aime24": 30, "gsm8k": 1319}


@pytest.fixture(scope="module")
def shared_benchmarks() -> tuple[str, str]:
    return str(BENCHMARK_DIR), str(BENCHMARK_DIR / "math500.jsonl")


@pytest.mark.parametrize("name", list(ROW_COUNTS))
def test_every_shared_benchmark_loads_as_eval_rows(shared_benchmarks, name):
    folder, math500 = shared_benchmarks
    rows, origin = bm.load_benchmark(name, benchmark_dir=folder, math500_file=math500)
    assert len(rows) == ROW_COUNTS[name] and origin.endswith(".jsonl")
    assert all(isinstance(r["problem"], str) and r["answer"].strip() and isinstance(r["type"], str) for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)
    if name == "math500":
        assert rows[0]["id"] == "test/precalculus/807.json" and rows[0]["level"] == 2 and rows[0]["type"] == "Precalculus"
    if name == "olympiadbench":
        assert any("unit" in r for r in rows) and any(r.get("is_multiple_answer") for r in rows)
    if name == "amc23":
        assert rows[0]["answer"] == "27" and rows[0]["type"] == "amc23" and rows[0]["level"] is None
    assert len(bm.load_benchmark(name, benchmark_dir=folder, math500_file=math500, limit=3)[0]) == 3


def test_missing_files_and_bad_rows_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'aime24': file '.*nowhere/aime24.jsonl' not found; pass "
                                                r"--benchmark_dir, or --benchmark_source hub"):
        bm.load_benchmark("aime24", benchmark_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="'math500': .*--math500_file"):
        bm.load_benchmark("math500", math500_file="")
    (tmp_path / "gsm8k.jsonl").write_text(json.dumps({"id": "g/0", "problem": "1+1?", "answer": "2"}) + "\n"
                                          + json.dumps({"id": "g/1", "problem": "2+2?"}) + "\n")
    with pytest.raises(ValueError, match=r"gsm8k.jsonl line 2: field 'answer' must be a non-empty string"):
        bm.load_benchmark("gsm8k", benchmark_dir=str(tmp_path))
    (tmp_path / "amc23.jsonl").write_text(2 * (json.dumps({"id": "a/0", "problem": "x", "answer": "1"}) + "\n"))
    with pytest.raises(ValueError, match=r"amc23.jsonl line 2: id 'a/0' is used twice"):
        bm.load_benchmark("amc23", benchmark_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown benchmark.*'math'"):
        bm.load_benchmark("math")


HUB_RECORDS = {
    "math500": [{"problem": "p", "solution": "s", "answer": "\\frac{1}{2}", "subject": "Algebra", "level": 3,
                 "unique_id": "test/algebra/1.json"}],
    "aime24": [{"id": 60, "problem": "p", "solution": "s", "answer": "204", "url": "u", "year": "2024"}],
    "amc23": [{"id": 0, "question": "q", "answer": 27.0, "url": "u"}],
    "minerva_math": [{"question": "q", "answer": "1.6"}],
    "olympiadbench": [{"id": 1606, "question": "q", "final_answer": ["$21$", "$n-1$"], "unit": None,
                       "is_multiple_answer": True, "answer_type": "Numerical", "subfield": "Combinatorics"}],
    "gsm8k": [{"question": "q", "answer": "She makes 9 * 2 = $<<9*2=18>>18.\n#### 1,018"}],
}
HUB_EXPECTED = {
    "math500": {"id": "test/algebra/1.json", "answer": "\\frac{1}{2}", "type": "Algebra", "level": 3},
    "aime24": {"id": "aime24/60", "answer": "204", "type": "aime24"},
    "amc23": {"id": "amc23/0", "answer": "27", "problem": "q"},
    "minerva_math": {"id": "minerva_math/0", "answer": "1.6"},
    "olympiadbench": {"id": "olympiadbench/1606", "answer": "21, n-1", "type": "Combinatorics",
                      "is_multiple_answer": True},
    "gsm8k": {"id": "gsm8k/0", "answer": "1018"},
}


@pytest.mark.parametrize("name", list(HUB_RECORDS))
def test_hub_records_become_the_same_eval_rows(name, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(dataset, config=None, split=None):
        calls.append((dataset, config, split))
        return HUB_RECORDS[name]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    rows, origin = bm.load_benchmark(name, source="hub")
    spec = bm.BENCHMARKS[name]
    assert calls == [(spec.hub_dataset, spec.hub_config, spec.hub_split)] and origin.startswith(f"hub:{spec.hub_dataset}")
    assert {k: rows[0][k] for k in HUB_EXPECTED[name]} == HUB_EXPECTED[name]


def test_unreachable_hub_names_the_dataset_and_the_local_option(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match="'gsm8k': could not load openai/gsm8k.*--benchmark_source local"):
        bm.load_benchmark("gsm8k", source="hub")


def test_hub_rows_are_compared_with_the_shipped_copy(monkeypatch, caplog):
    """--benchmark_source hub logs where the hub's rows differ from benchmark_data (issue 25)."""
    import datasets

    shipped = [json.loads(line) for line in (BENCHMARK_DIR / "amc23.jsonl").read_text().splitlines()]
    same = [{"id": r["id"], "question": r["problem"], "answer": float(r["answer"])} for r in shipped]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: same)
    with caplog.at_level("INFO", logger="apo.benchmarks"):
        bm.load_benchmark("amc23", source="hub")
    assert "the hub's 40 problems match the shipped benchmark_data/amc23.jsonl" in caplog.text
    changed = same[:38] + [{**same[38], "answer": 1.0}, {"id": 99, "question": "a new problem", "answer": 3.0}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: changed)
    caplog.clear()
    with caplog.at_level("INFO", logger="apo.benchmarks"):
        bm.load_benchmark("amc23", source="hub")
    assert ("the hub's 40 problems differ from the shipped benchmark_data/amc23.jsonl (40 problems): 1 only on the "
            "hub, 1 only in the shipped file, 1 with another answer") in caplog.text
    assert caplog.records[-1].levelname == "WARNING"


def test_protocols_name_their_benchmarks_settings_and_sources():
    apo, pag = bm.PROTOCOLS["apo"], bm.PROTOCOLS["pag"]
    assert apo.benchmarks == ("math500", "minerva_math", "olympiadbench", "amc23")
    assert apo.decoding("math500") == bm.Decoding(1, 0.0, 1.0, 1024)
    assert (apo.decoding("amc23").num_samples, apo.decoding("amc23").temperature) == (32, 1.0)
    assert pag.benchmarks == ("math500", "minerva_math", "aime24")
    assert {(pag.decoding(b).num_samples, pag.decoding(b).temperature, pag.decoding(b).top_p)
            for b in pag.benchmarks} == {(32, 0.6, 0.95)}
    described = apo.describe(["amc23", "gsm8k"], "none", 1)
    assert described["decoding"]["amc23"]["pass_k"] == [1, 32] and described["decoding"]["gsm8k"]["in_paper"] is False
    assert described["correction_mode"] == "none"
    assert bm.custom_protocol(apo.default).describe(["gsm8k"], "self_verify", 2)["decoding"]["gsm8k"]["in_paper"] is None
    assert all(p.sources and p.notes for p in (apo, pag))
    assert set(bm.PROTOCOLS) | {"custom"} == {"apo", "pag", "custom"}
