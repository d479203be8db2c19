"""The scoring fast paths: LoRA merged at load, the bf16 cast the GPU path uses, batch plans, a model-less judge."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel

from judge.backends.transformer import (TransformerJudge, artifact_backbone, inference_dtype, load_classifier,
                                        native_bf16)
from judge.model import Judge, length_sorted_batches
from judge.records import read_records
from tests.tiny import synthetic_rows, write_jsonl


@pytest.fixture()
def records(tmp_path):
    return read_records(write_jsonl(tmp_path / "r.jsonl", synthetic_rows(45, seed=5, with_labels=False))).records


def test_lora_is_merged_at_load_and_scores_as_the_adapter_does(tiny_judge, records):
    judge = Judge.load(tiny_judge, dtype="float32")  # the comparison below is fp32 against fp32
    assert not isinstance(judge.model, PeftModel)
    assert not [name for name, _ in judge.model.named_modules() if "lora" in name]
    assert (Path(tiny_judge) / "adapter" / "adapter_model.safetensors").is_file()  # the artifact keeps its adapter

    base = load_classifier(artifact_backbone(judge.meta["backbone"]), len(judge.classes_),
                           pad_token_id=judge.tokenizer.pad_token_id)
    unmerged = PeftModel.from_pretrained(base, Path(tiny_judge) / "adapter").eval()
    merged_logits = judge.logits(records)
    judge.model = unmerged
    np.testing.assert_allclose(merged_logits, judge.logits(records), atol=1e-5)  # trained head and pooler kept too


def test_bf16_path_casts_the_model_and_keeps_its_labels(tiny_judge, records):
    """What CUDA and bf16-native CPUs score with (bf16 weights, fp32 logits out), on the CPU."""
    default = Judge.load(tiny_judge)
    assert {p.dtype for p in default.model.parameters()} == {inference_dtype(torch.device("cpu"))}
    assert inference_dtype(torch.device("cpu")) == (torch.bfloat16 if native_bf16(torch.device("cpu")) else torch.float32)
    fp32 = Judge.load(tiny_judge, dtype="float32")
    bf16 = Judge.load(tiny_judge, device="cpu", dtype="bfloat16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    a, b = fp32.predict_proba(records), bf16.predict_proba(records)
    assert np.allclose(b.sum(axis=1), 1)
    assert (a.argmax(axis=1) == b.argmax(axis=1)).mean() >= 0.9
    assert np.abs(a - b).max() < 0.1


def test_batches_follow_length_and_cover_every_record_once(records):
    plan = length_sorted_batches(records, 8)
    assert sorted(i for chunk in plan for i in chunk) == list(range(len(records)))
    assert [len(chunk) for chunk in plan] == [8] * 5 + [5]
    lengths = [len(records[i].response) + len(records[i].question) for chunk in plan for i in chunk]
    assert lengths == sorted(lengths)


def test_scores_do_not_depend_on_the_batch_size(tiny_judge, records):
    judge = Judge.load(tiny_judge, dtype="float32")  # padding is masked out; bf16 rounds each batch shape apart
    np.testing.assert_allclose(judge.logits(records, batch_size=1), judge.logits(records, batch_size=64), atol=1e-5)


def test_cuda_batches_hold_a_token_budget_and_cpu_batches_stay_small(tiny_judge):
    meta = Judge.without_model(tiny_judge).meta
    short, long = {**meta, "max_length": 128}, {**meta, "max_length": 512}
    assert TransformerJudge.default_batch_size(short, "cuda") == 4 * TransformerJudge.default_batch_size(long, "cuda")
    assert TransformerJudge.default_batch_size(short, "cpu") < TransformerJudge.default_batch_size(short, "cuda")


def test_a_judge_without_its_model_knows_its_scheme_but_cannot_score(tiny_judge, records):
    described = Judge.without_model(tiny_judge)
    assert described.classes_ == Judge.load(tiny_judge).classes_
    with pytest.raises(NotImplementedError, match="without its model"):
        described.predict(records)
