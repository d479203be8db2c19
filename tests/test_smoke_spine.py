from judge import Judge
from judge.records import read_records
from tests.tiny import synthetic_rows, write_jsonl


def test_tiny_judge_learns_synthetic_labels(tiny_judge, tmp_path):
    """A 2-layer random BERT with LoRA learns the wording cues of the synthetic labels."""
    judge = Judge.load(tiny_judge)
    rows = synthetic_rows(30, seed=7)
    dataset = read_records(write_jsonl(tmp_path / "x.jsonl", rows))
    predicted = [p.label for p in judge.predict(dataset.records)]
    accuracy = sum(p == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    assert accuracy >= 0.75  # chance is 1/3
    assert judge.meta["metrics"]["test"]["kappa"] >= 0.8
