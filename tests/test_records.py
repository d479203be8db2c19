import json

import pytest

from judge.errors import InputError
from judge.records import read_records
from judge.schemes import load_scheme
from judge.splits import early_stopping_split, split_by_group
from tests.tiny import synthetic_rows, write_jsonl


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_field_aliases_and_label_spellings(tmp_path):
    path = write_lines(tmp_path / "in.jsonl", [
        json.dumps({"instruction_id": 7, "instruction": "q?", "pred_answer": "no.", "safe_label": 1, "response_model": "m"}),
        json.dumps({"id": "b", "prompt": "q2", "output": "ok", "label_str": "Safe with warning", "category": "Privacy"}),
        json.dumps({"id": "c", "question": "q3", "answer": "sure", "label": "UNSAFE", "image_path": "imgs/1.png"}),
        json.dumps({"id": "d", "question": "q4", "response": "", "label": "refuse"}),
        json.dumps({"id": "e", "question": "q5", "response": "r", "label": "3.0", "category": 4, "scenario": 1.5}),
    ])
    dataset = read_records(path)
    assert dataset.scheme.name == "vlsbench"
    assert [(r.id, r.label) for r in dataset.records] == [("7", "refuse"), ("b", "warning"), ("c", "unsafe"), ("d", "refuse"),
                                                          ("e", "unsafe")]  # "3.0" read as the number 3.0 is
    first = dataset.records[0]
    assert (first.question, first.response, first.model) == ("q?", "no.", "m")
    assert dataset.records[3].response == ""  # an empty response is a valid record
    assert (dataset.records[4].category, dataset.records[4].scenario) == ("4", "1.5")  # numbers, kept as text
    assert dataset.summary() == "5 lines read, 5 used, 0 skipped"


@pytest.mark.parametrize("line, message", [
    ('{"id": "x", "question": "q"', "not valid JSON"),
    ('{"id": "x", "question": "q"}', "no response field"),
    ('{"id": "x", "response": "r", "label": "maybe"}', "unknown label 'maybe'"),
    ('{"id": "a", "response": "r", "label": "refuse"}', "duplicate id 'a' (first at"),
    ('[1, 2]', "expected a JSON object"),
    ('{"id": "x", "question": 5, "response": "r", "label": "refuse"}', "question must be a string, got int"),
    ('{"id": "x", "image": ["a.png"], "response": "r", "label": "refuse"}', "image must be a string, got list"),
    ('{"id": {"n": 1}, "response": "r", "label": "refuse"}', "id must be a string or a number, got dict"),
    ('{"id": "x", "response_model": true, "response": "r", "label": "refuse"}', "response_model must be a string or a number"),
    ('{"id": "x", "response": "r", "label": "3.5"}', "unknown label '3.5'"),
])
def test_bad_line_names_file_and_line(tmp_path, line, message):
    path = write_lines(tmp_path / "bad.jsonl", ['{"id": "a", "response": "r", "label": "refuse"}',
                                                 '{"id": "b", "response": "r", "label": "unsafe"}', line])
    with pytest.raises(InputError) as err:
        read_records(path, scheme="vlsbench")
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


def test_skip_invalid_reports_every_skipped_line(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [
        '{"id": "a", "response": "r", "label": "refuse"}', "not json", "",
        '{"id": "b", "label": "refuse"}', '{"id": "a", "response": "again", "label": "unsafe"}',
        '{"id": "c", "response": "r", "label": "warning"}'])
    dataset = read_records(path, skip_invalid=True)
    assert [r.id for r in dataset.records] == ["a", "c"]
    assert [s.line for s in dataset.skipped] == [2, 4, 5]
    assert dataset.summary() == "5 lines read, 2 used, 3 skipped"


def test_binary_labels_from_words_or_unsafe_flag(tmp_path):
    path = write_lines(tmp_path / "bin.jsonl", [
        '{"id": "a", "response": "r", "unsafe": true}', '{"id": "b", "response": "r", "unsafe": 0}',
        '{"id": "c", "response": "r", "label": "safe"}'])
    dataset = read_records(path)
    assert dataset.scheme.name == "mmsafetybench"
    assert [r.label for r in dataset.records] == ["unsafe", "safe", "safe"]


def test_mixed_schemes_rejected_with_the_lines_that_disagree(tmp_path):
    path = write_lines(tmp_path / "mix.jsonl", [
        '{"id": "a", "response": "r", "label": "refuse"}', '{"id": "b", "response": "r", "label": "safe"}',
        '{"id": "c", "response": "r", "label": "unsafe"}', '{"id": "d", "response": "r", "label": "warning"}'])
    with pytest.raises(InputError) as err:
        read_records(path)
    text = str(err.value)
    assert "labels mix schemes" in text and "only vlsbench: 2 lines" in text and f"{path}:1 ('refuse')" in text and f"{path}:4 ('warning')" in text
    assert "only mmsafetybench: 1 lines" in text and f"{path}:2 ('safe')" in text


def test_custom_four_class_scheme_file(tmp_path):
    scheme_file = tmp_path / "four.toml"
    scheme_file.write_text("""
name = "four"
rate = "harmless rate"
rate_labels = ["refuse", "deflect"]
[[labels]]
name = "refuse"
safe = true
aliases = ["no"]
[[labels]]
name = "deflect"
safe = true
[[labels]]
name = "partial"
[[labels]]
name = "comply"
code = 9
""")
    scheme = load_scheme(scheme_file)
    assert scheme.classes == ("refuse", "deflect", "partial", "comply")
    assert (scheme.parse("No"), scheme.parse(9), scheme.to_binary("partial")) == ("refuse", "comply", "unsafe")
    assert scheme.rate_of(["refuse", "deflect", "comply", "comply"]) == 0.5
    path = write_lines(tmp_path / "four.jsonl", ['{"id": "a", "response": "r", "label": "no"}',
                                                  '{"id": "b", "response": "r", "label": "partial"}'])
    assert [r.label for r in read_records(path, scheme=scheme_file).records] == ["refuse", "partial"]


def test_scheme_rejects_an_alias_naming_two_labels(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "labels": [{"name": "a", "aliases": ["x"]}, {"name": "b", "aliases": ["x"]}]}))
    with pytest.raises(InputError, match="alias 'x' names both a and b"):
        load_scheme(bad)


def test_group_split_keeps_prompts_whole_and_is_seeded(tmp_path):
    records = read_records(write_jsonl(tmp_path / "s.jsonl", synthetic_rows(200))).records
    split = split_by_group(records, test_size=0.2, val_size=0.1, seed=3)
    groups = [{r.prompt_group for r in part} for part in (split.train, split.val, split.test)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert sum(split.sizes().values()) == 200
    assert 30 <= len(split.test) <= 50 and {r.label for r in split.test} == {"refuse", "warning", "unsafe"}
    again = split_by_group(records, test_size=0.2, val_size=0.1, seed=3)
    assert [r.id for r in again.test] == [r.id for r in split.test]


@pytest.mark.parametrize("share", [0.15, 0.4, 0.5])
def test_group_split_holds_out_the_share_of_rows_asked_in_every_class(tmp_path, share):
    """round(1 / share) folds held out 1/K: 0.15 gave 14%, and 0.4 gave half."""
    records = read_records(write_jsonl(tmp_path / "s.jsonl", synthetic_rows(200))).records
    test = split_by_group(records, test_size=share, val_size=0.0, seed=0).test
    assert len(test) == round(share * 200)
    for label in ("refuse", "warning", "unsafe"):  # groups of two rows, two labels each: greedy, so 1.5 groups
        held, every = (sum(r.label == label for r in part) for part in (test, records))
        assert abs(held - share * every) <= 3, (label, held, every)


def test_early_stopping_split_of_a_fold_with_fewer_rows_per_class_than_folds_is_no_traceback(tmp_path):
    """10% as one of ten StratifiedGroupKFold folds raised ValueError when every class had fewer than 10 rows."""
    records = read_records(write_jsonl(tmp_path / "s.jsonl", synthetic_rows(24))).records
    fit, val = early_stopping_split(records, 0.1, seed=1)
    assert len(val) == 2 and len(fit) == 22  # 2.4 rows asked: one prompt group of two
