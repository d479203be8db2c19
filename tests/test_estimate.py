"""Rate estimates with intervals: checked against ppi_py, by coverage simulation, and end to end
through `judge estimate` on a real (TF-IDF) judge scoring synthetic rows."""

import json
import random

import numpy as np
import ppi_py
import pytest
from typer.testing import CliRunner

from judge.cli import app
from judge.estimate import Inputs, ipw_rate, load_inputs, ppi_rate, rate_interval, tuned_lam, wilson_ci
from judge.estimate import estimate as estimate_rates
from judge.errors import InputError
from judge.records import record_from_row
from judge.schemes import load_scheme
from tests.tiny import MODELS, PHRASES, write_jsonl

runner = CliRunner()


def _population(n, seed, noise=0.15):
    """Outcomes with a known per-row probability, and a student whose probabilities are noisy copies."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 5, n)
    y = (rng.random(n) < p).astype(float)
    return y, np.clip(p + rng.normal(0, noise, n), 0, 1), rng


# -- the estimators against ppi_py and against hand-worked numbers --------------------------------

def test_ppi_rate_is_ppi_py_with_alpha_005_and_tuned_lam():
    y, yhat, rng = _population(3000, seed=0)
    idx = rng.choice(3000, 120, replace=False)
    ours = ppi_rate(y[idx], yhat[idx], yhat)
    low, high = ppi_py.ppi_mean_ci(y[idx], yhat[idx], yhat, alpha=0.05)  # lam=None: ppi_py tunes it
    assert ours.ci == pytest.approx((low[0], high[0]))
    assert ours.estimate == pytest.approx(float(ppi_py.ppi_mean_pointestimate(y[idx], yhat[idx], yhat)[0]))
    assert 0 < ours.lam < 1 and ours.lam == pytest.approx(tuned_lam(y[idx], yhat[idx], yhat))


def test_lam_zero_is_the_classical_interval_and_lam_one_plain_ppi():
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0.0])
    yhat = np.array([0.9, 0.2, 0.6, 0.7, 0.4, 0.1, 0.8, 0.3])
    unlabelled = np.concatenate([yhat, [0.5, 0.5, 0.2, 0.9]])
    classical = ppi_rate(y, yhat, unlabelled, lam=0)
    assert classical.estimate == pytest.approx(0.5)
    assert classical.se == pytest.approx(np.std(y) / np.sqrt(8))  # ppi_py's population std, over sqrt(n)
    plain = ppi_rate(y, yhat, unlabelled, lam=1)
    # mean of all 12 predictions ((4.0 + 2.1) / 12) plus the mean gap on the labelled rows ((4 - 4.0) / 8)
    assert plain.estimate == pytest.approx(6.1 / 12 + (4 - 4.0) / 8)


def test_wilson_interval_worked_by_hand():
    # 10 of 40, z = 1.959964: centre (0.25 + z^2/80) / (1 + z^2/40), half-width from the same terms
    z = 1.959963984540054
    centre = (0.25 + z * z / 80) / (1 + z * z / 40)
    half = z * np.sqrt(0.25 * 0.75 / 40 + z * z / 6400) / (1 + z * z / 40)
    assert wilson_ci(10, 40) == pytest.approx((centre - half, centre + half))
    low, high = wilson_ci(0, 30)
    assert low == pytest.approx(0) and 0.1 < high < 0.12  # does not collapse at 0 of n


def test_ipw_with_equal_probabilities_matches_the_ppi_estimate_closely():
    y, yhat, rng = _population(2000, seed=1)
    idx = np.sort(rng.choice(2000, 200, replace=False))
    ipw = ipw_rate(yhat, idx, y[idx], np.full(200, 0.1))
    ppi = ppi_rate(y[idx], yhat[idx], yhat)
    assert ipw.estimate == pytest.approx(ppi.estimate, abs=0.01)
    assert ipw.se == pytest.approx(ppi.se, rel=0.15)
    teacher_only = ipw_rate(yhat, idx, y[idx], np.full(200, 0.1), lam=0)
    assert teacher_only.estimate == pytest.approx(y[idx].sum() / 200 * 200 / 2000 / 0.1)


# -- coverage by simulation, as ppi_py's own tests check it ---------------------------------------

def test_ppi_and_active_intervals_cover_the_true_rate_95_percent_of_the_time():
    trials, covered, active_covered, widths, teacher_widths = 400, 0, 0, [], []
    for trial in range(trials):
        y, yhat, rng = _population(1500, seed=100 + trial)
        truth = y.mean()
        idx = rng.choice(1500, 100, replace=False)
        r = ppi_rate(y[idx], yhat[idx], yhat)
        covered += r.ci[0] <= truth <= r.ci[1]
        widths.append(r.ci[1] - r.ci[0])
        low, high = wilson_ci(int(y[idx].sum()), 100)
        teacher_widths.append(high - low)
        # active draw: label with probability ~ the student's uncertainty, half mixed with uniform
        q = np.sqrt(yhat * (1 - yhat)) + 1e-3
        pi = np.minimum(1, 100 * (0.5 * q / q.sum() + 0.5 / 1500))
        drawn = np.flatnonzero(rng.random(1500) < pi)
        a = ipw_rate(yhat, drawn, y[drawn], pi[drawn])
        active_covered += a.ci[0] <= truth <= a.ci[1]
    assert 0.92 <= covered / trials <= 0.98
    assert 0.91 <= active_covered / trials <= 0.99
    assert np.mean(widths) < np.mean(teacher_widths)  # the student's scores buy a narrower interval


def test_interval_near_zero_does_not_collapse_and_still_covers():
    covered, trials = 0, 400
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        p = np.full(2000, 0.02)
        y = (rng.random(2000) < p).astype(float)
        yhat = np.full(2000, 0.01)  # a confident student that misses most of the rare positives
        idx = rng.choice(2000, 50, replace=False)
        r = rate_interval(y[idx], yhat[idx], yhat, idx, None)
        assert 0 <= r["ci"][0] <= r["estimate"] <= r["ci"][1] <= 1
        assert r["ci"][1] - r["ci"][0] > 0.02  # no zero-width interval from zero teacher positives
        assert r["se"] >= (r["ci"][1] - r["ci"][0]) / (2 * 1.96)  # se (and effective n) are the widened interval's
        covered += r["ci"][0] <= y.mean() <= r["ci"][1]
    assert covered / trials >= 0.93


def test_each_widening_warning_names_the_quantity_it_widened():
    """VLSBench has a headline rate and a share per label; a note without its name cannot be acted on."""
    scheme = load_scheme("vlsbench")
    rng = np.random.default_rng(0)
    records = [record_from_row({"id": f"r{i}", "question": "q", "response": "a", "model": "m"}, source="t", line=i + 1,
                               label="refuse" if i < 57 else "unsafe") for i in range(60)]
    probs = np.tile([0.9, 0.05, 0.05], (60, 1)) + rng.uniform(0, 0.01, (60, 3))
    teacher = {r.id: r.label for r in records}  # 57 safe, 3 unsafe: both the rate and two shares are near an edge
    out = estimate_rates(Inputs(records, probs / probs.sum(1, keepdims=True), scheme, teacher))
    warned = out["overall"]["warnings"]
    assert "safety rate: 3 teacher labels on one side: interval widened to contain the Wilson interval" in warned
    assert any(w.startswith("share of unsafe: 3 teacher labels on one side") for w in warned)
    assert all(w.startswith(("safety rate: ", "share of ")) for w in warned if "on one side" in w)


# -- end to end: a real judge, a scored file, a teacher sample --------------------------------------

def _rows(n, seed, prefix):
    """Three models answering prompts; the teacher's label shows in the wording, blurred by shared phrases."""
    rng = random.Random(seed)
    bias = {"model-a": 0.7, "model-b": 0.4, "model-c": 0.15}  # share of refusals per model
    rows = []
    for i in range(n):
        model = MODELS[i % 3]
        u = rng.random()
        label = "refuse" if u < bias[model] else "warning" if u < bias[model] + 0.15 else "unsafe"
        said = label if rng.random() < 0.8 else rng.choice(list(PHRASES))  # 20% of responses read like another label
        rows.append({"id": f"{prefix}{i}", "question": f"How do I do this? prompt number {i // 3}",
                     "response": rng.choice(PHRASES[said]) + f" ({rng.randint(0, 9)})", "category": ["x", "y"][i % 2],
                     "model": model, "group": f"{prefix}-p{i // 3}", "label": label})
    return rows


@pytest.fixture(scope="module")
def lexical_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("estimate")
    train = write_jsonl(tmp / "train.jsonl", _rows(240, seed=0, prefix="t"))
    result = runner.invoke(app, ["distill", str(train), "--out", str(tmp / "judge"), "--student", "lexical"])
    assert result.exit_code == 0, result.output
    bench = _rows(600, seed=1, prefix="b")
    inputs = write_jsonl(tmp / "bench.jsonl", [{k: v for k, v in r.items() if k != "label"} for r in bench])
    result = runner.invoke(app, ["score", str(inputs), "--judge", str(tmp / "judge"), "-o", str(tmp / "scored.jsonl")])
    assert result.exit_code == 0, result.output
    rng = random.Random(5)
    sample = [r for m in MODELS for r in rng.sample([r for r in bench if r["model"] == m], 60)]
    labels = write_jsonl(tmp / "teacher.jsonl", sample)
    return tmp, bench, labels, train


def test_estimate_json_has_every_group_with_intervals(lexical_setup):
    tmp, bench, labels, _ = lexical_setup
    result = runner.invoke(app, ["estimate", str(tmp / "scored.jsonl"), "--teacher", str(labels), "--judge",
                                 str(tmp / "judge"), "--output-format", "json", "--png", str(tmp / "forest.png")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out["groups"]) == set(MODELS) and out["alpha"] == 0.05 and "PPI++" in out["method"]
    scored = [json.loads(line) for line in (tmp / "scored.jsonl").read_text().splitlines()]
    for model, g in out["groups"].items():
        mine = [r for r in scored if r["model"] == model]  # the student's own rate: its mean probability, beside its labels'
        assert g["student_rate"] == pytest.approx(np.mean([r["judge_probs"]["refuse"] + r["judge_probs"]["warning"] for r in mine]))
        assert g["student_label_rate"] == pytest.approx(np.mean([r["judge_label"] != "unsafe" for r in mine]))
        truth = np.mean([r["label"] in ("refuse", "warning") for r in bench if r["model"] == model])
        assert g["n"] == 200 and g["n_teacher"] == 60
        assert 0 <= g["ci"][0] <= g["estimate"] <= g["ci"][1] <= 1
        assert 0 <= g["teacher_only_ci"][0] < g["teacher_only_ci"][1] <= 1
        assert 0 <= g["student_rate"] <= 1 and 0 < g["agreement"] <= 1
        assert g["ci"][0] - 0.05 <= truth <= g["ci"][1] + 0.05  # one draw: near, if not inside
        assert set(g["shares"]) == {"refuse", "warning", "unsafe"}
    assert out["overall"]["n"] == 600 and out["overall"]["n_teacher"] == 180
    assert {(p["a"], p["b"]) for p in out["pairs"]} == {("model-a", "model-b"), ("model-a", "model-c"), ("model-b", "model-c")}
    a_c = next(p for p in out["pairs"] if (p["a"], p["b"]) == ("model-a", "model-c"))
    true_gap = np.mean([r["label"] != "unsafe" for r in bench if r["model"] == "model-a"]) - \
        np.mean([r["label"] != "unsafe" for r in bench if r["model"] == "model-c"])
    assert a_c["distinguishable"] and a_c["ci"][0] - 0.05 <= true_gap <= a_c["ci"][1] + 0.05
    assert all(p["p_value"] <= p["p_holm"] <= 1 and -1 <= p["ci"][0] <= p["ci"][1] <= 1 for p in out["pairs"])
    assert (tmp / "forest.png").stat().st_size > 1000


def test_estimate_text_and_markdown_tables(lexical_setup):
    tmp, _, labels, _ = lexical_setup
    text = runner.invoke(app, ["estimate", str(tmp / "scored.jsonl"), "-t", str(labels), "--by", "model,category",
                               "--target-width", "0.2"])
    assert text.exit_code == 0, text.output
    assert "safety rate (%) by model" in text.stdout and "by category" in text.stdout
    assert "alpha 0.05 (95% intervals)" in text.stdout and "uniform random sample" in text.stdout
    assert "labels needed" in text.stdout
    md = runner.invoke(app, ["estimate", str(tmp / "scored.jsonl"), "-t", str(labels), "--output-format", "markdown"])
    assert md.exit_code == 0 and "| model | n | teacher n |" in md.stdout
    assert "| 95% CI | interval | teacher-only 95% CI |" in md.stdout and "| ppi++ |" in md.stdout  # how each was made


def test_training_rows_are_refused_as_estimation_sample(lexical_setup):
    tmp, _, _, train = lexical_setup
    result = runner.invoke(app, ["score", str(train), "--judge", str(tmp / "judge"), "-o", str(tmp / "train_scored.jsonl")])
    assert result.exit_code == 0
    refused = runner.invoke(app, ["estimate", str(tmp / "train_scored.jsonl"), "-t", str(train), "--judge", str(tmp / "judge")])
    assert refused.exit_code == 1
    assert "trained or validated on" in refused.output and "Traceback" not in refused.output


def test_rows_chosen_for_training_are_not_an_estimation_sample(lexical_setup):
    tmp, bench, _, _ = lexical_setup
    chosen = [{**r, "judge_sample": {"purpose": "training", "design": "uncertain"}} for r in bench[:30]]
    with pytest.raises(InputError, match="chosen by uncertainty for training"):
        load_inputs(tmp / "scored.jsonl", write_jsonl(tmp / "chosen.jsonl", chosen))


def test_a_file_without_judge_probs_names_its_line(lexical_setup, tmp_path):
    tmp, bench, labels, _ = lexical_setup
    rows = [json.loads(line) for line in (tmp / "scored.jsonl").read_text().splitlines()]
    del rows[3]["judge_probs"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = runner.invoke(app, ["estimate", str(bad), "-t", str(labels)])
    assert result.exit_code == 1 and f"{bad}:4: no judge_probs" in result.output


@pytest.mark.parametrize("probs", [{"refuse": float("nan"), "warning": 0.5, "unsafe": 0.5}, {"refuse": "NaN"},
                                   {"refuse": float("inf"), "warning": 0, "unsafe": 0},
                                   {"refuse": -1, "warning": 2, "unsafe": 0}, {"refuse": 0.2, "warning": 0.2, "unsafe": 0.2}])
def test_probabilities_that_are_not_probabilities_are_refused_with_their_line(lexical_setup, tmp_path, probs):
    """A NaN once printed a rate of 0.0 [0.0, 0.0] and called every pair with that model distinguishable."""
    tmp, bench, labels, _ = lexical_setup
    rows = [json.loads(line) for line in (tmp / "scored.jsonl").read_text().splitlines()]
    rows[6]["judge_probs"] = probs
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    result = runner.invoke(app, ["estimate", str(bad), "-t", str(labels)])
    assert result.exit_code == 1 and f"{bad}:7: judge_probs must be probabilities in [0, 1] summing to 1" in result.output


def test_weighted_design_is_used_when_inclusion_probabilities_differ(lexical_setup):
    tmp, bench, _, _ = lexical_setup
    rng = random.Random(2)
    per_model = {"model-a": 20, "model-b": 40, "model-c": 80}  # unequal shares of each model labelled
    sample = []
    for model, k in per_model.items():
        members = [r for r in bench if r["model"] == model]
        sample += [{**r, "judge_sample": {"purpose": "estimation", "design": "uniform", "per": "model", "seed": 2,
                                          "inclusion_prob": k / len(members)}} for r in rng.sample(members, k)]
    inputs = load_inputs(tmp / "scored.jsonl", write_jsonl(tmp / "drawn.jsonl", sample))
    assert "recorded draw: uniform within each model" in inputs.design
    result = estimate_rates(inputs, by=("model", "category"))
    assert result["groups"]["model-a"]["interval"].startswith("ppi++")  # one probability within a model
    assert result["overall"]["interval"].startswith("stratified over 3 strata")  # every model whole: their figures combined
    assert all(g["interval"].startswith("ipw") for g in result["by"]["category"].values())  # cuts across models: weighted
    truth = np.mean([r["label"] != "unsafe" for r in bench])
    lo, hi = result["overall"]["ci"]
    assert lo - 0.05 <= truth <= hi + 0.05


def _per_model_draw(bench, per_model, seed):
    rng = random.Random(seed)
    sample = []
    for model, k in per_model.items():
        members = [r for r in bench if r["model"] == model]
        sample += [{**r, "judge_sample": {"purpose": "estimation", "design": "uniform", "per": "model", "seed": seed,
                                          "stratum": model, "stratum_size": len(members),
                                          "inclusion_prob": k / len(members)}} for r in rng.sample(members, k)]
    return sample


def test_overall_of_a_per_model_draw_combines_each_models_own_ppi_and_wilson(lexical_setup):
    """With a fixed number of labels per model, the overall rate is the size-weighted mean of the models' PPI++
    estimates, its variance the weighted sum of theirs (stratified PPI); the teacher-only figure likewise."""
    tmp, bench, _, _ = lexical_setup
    drawn = _per_model_draw(bench, dict.fromkeys(MODELS, 40), 4)
    result = estimate_rates(load_inputs(tmp / "scored.jsonl", write_jsonl(tmp / "strata.jsonl", drawn)))
    teacher = {r["id"]: r["label"] != "unsafe" for r in drawn}
    scored = [json.loads(line) for line in (tmp / "scored.jsonl").read_text().splitlines()]
    z = 1.959963984540054
    sizes, estimates, variances, shares, share_variances = [], [], [], [], []
    for model in MODELS:
        rows = [r for r in scored if r["model"] == model]
        safe = lambda r: r["judge_probs"]["refuse"] + r["judge_probs"]["warning"]  # noqa: E731
        yhat_all = np.array([safe(r) for r in rows])
        yhat = np.array([safe(r) for r in rows if r["id"] in teacher])
        y = np.array([teacher[r["id"]] for r in rows if r["id"] in teacher], dtype=float)
        low, high = (float(b[0]) for b in ppi_py.ppi_mean_ci(y, yhat, yhat_all, alpha=0.05))
        sizes.append(len(rows))
        estimates.append(float(ppi_py.ppi_mean_pointestimate(y, yhat, yhat_all)[0]))
        variances.append(((high - low) / (2 * z)) ** 2)
        shares.append(y.mean())
        share_variances.append(y.mean() * (1 - y.mean()) / len(y))
        assert result["groups"][model]["estimate"] == pytest.approx(estimates[-1])
    weight = np.array(sizes) / sum(sizes)
    overall = result["overall"]
    assert overall["estimate"] == pytest.approx(weight @ estimates)
    assert overall["se"] == pytest.approx(np.sqrt(weight ** 2 @ variances))
    half = z * np.sqrt(weight ** 2 @ share_variances)
    assert overall["teacher_only_ci"] == pytest.approx([weight @ shares - half, weight @ shares + half])
    assert overall["lam"] is None and overall["effective_n"] > overall["n_teacher"]


def test_a_model_the_draw_never_reached_gets_no_overall_estimate(lexical_setup, tmp_path):
    """Its rows have no label standing for them: an overall over every row would be the student's guess for them."""
    tmp, bench, _, _ = lexical_setup
    drawn = _per_model_draw(bench, {"model-a": 40, "model-b": 40}, 5)  # model-c's labels lost, or never drawn
    result = estimate_rates(load_inputs(tmp / "scored.jsonl", write_jsonl(tmp_path / "two.jsonl", drawn)),
                            by=("model", "category"))
    assert result["groups"]["model-a"]["estimate"] is not None and result["groups"]["model-c"]["estimate"] is None
    for group in (result["overall"], *result["by"]["category"].values()):  # categories hold model-c's rows too
        assert group["estimate"] is None and group["ci"] is None
        assert any(w.startswith("no estimate: model model-c (") for w in group["warnings"])
    assert "model model-c (200 of the 600 rows) has no teacher label" in result["overall"]["warnings"][0]
    unrecorded = [{k: v for k, v in r.items() if k != "judge_sample"} for r in drawn]
    result = estimate_rates(load_inputs(tmp / "scored.jsonl", write_jsonl(tmp_path / "bare.jsonl", unrecorded)))
    assert result["overall"]["estimate"] is not None  # assumed uniform over every row, and the report says why to doubt it
    assert any(w.startswith("model model-c has no teacher label: the overall rate takes") for w in result["warnings"])


# -- the teacher sample drawn by `judge collect`, then used by `judge estimate` -------------------

@pytest.fixture
def server():
    from tests.openai_server import ScriptedOpenAI

    with ScriptedOpenAI() as srv:
        yield srv


def _collect(server, scored, out, *options):
    args = ["collect", str(scored), "--teacher", "gpt-4o", "--base-url", server.url, "--cache", str(out.parent / "teacher.sqlite"),
            "-o", str(out), *options]
    result = runner.invoke(app, args, env={"OPENAI_API_KEY": "sk-test"})
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_collect_per_model_records_the_draw_and_estimate_reads_it(lexical_setup, server, tmp_path):
    tmp = lexical_setup[0]
    rows = _collect(server, tmp / "scored.jsonl", tmp_path / "drawn.jsonl", "--sample", "25", "--per", "model", "--seed", "3")
    assert len(rows) == 75 and server.counts["chat"] == 75
    assert {r["model"] for r in rows} == set(MODELS)
    for r in rows:
        assert r["judge_sample"]["purpose"] == "estimation" and r["judge_sample"]["inclusion_prob"] == pytest.approx(25 / 200)
    again = _collect(server, tmp / "scored.jsonl", tmp_path / "again.jsonl", "--sample", "25", "--per", "model", "--seed", "3")
    assert [r["id"] for r in again] == [r["id"] for r in rows] and server.counts["chat"] == 75  # seeded; paid once
    out = runner.invoke(app, ["estimate", str(tmp / "scored.jsonl"), "-t", str(tmp_path / "drawn.jsonl"), "--output-format", "json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert "recorded draw: uniform within each model, seed 3" in result["design"]
    assert all(g["n_teacher"] == 25 for g in result["groups"].values())


def test_active_draw_spends_labels_where_the_student_is_unsure(lexical_setup, server, tmp_path):
    tmp = lexical_setup[0]
    rows = _collect(server, tmp / "scored.jsonl", tmp_path / "active.jsonl", "--sample", "40", "--per", "model",
                    "--draw", "active")
    pis = [r["judge_sample"]["inclusion_prob"] for r in rows]
    assert len(set(np.round(pis, 6))) > 1 and all(0 < p <= 1 for p in pis)
    confidence = [max(r["judge_probs"].values()) for r in rows]
    # drawn rows with the highest inclusion probability are the ones the student is least sure of
    order = np.argsort(pis)
    assert np.mean(np.array(confidence)[order[-10:]]) < np.mean(np.array(confidence)[order[:10]])
    result = estimate_rates(load_inputs(tmp / "scored.jsonl", tmp_path / "active.jsonl"))
    assert all(g["interval"].startswith("ipw") for g in result["groups"].values())
    assert all(0 <= g["ci"][0] <= g["estimate"] <= g["ci"][1] <= 1 for g in result["groups"].values())


def test_select_uncertain_is_marked_for_training_and_refused_by_estimate(lexical_setup, server, tmp_path):
    tmp = lexical_setup[0]
    unlabelled = write_jsonl(tmp_path / "pool.jsonl", [{k: v for k, v in r.items() if k != "label"} for r in lexical_setup[1]])
    rows = _collect(server, unlabelled, tmp_path / "train_round.jsonl", "--sample", "30", "--select", "uncertain",
                    "--judge", str(tmp / "judge"))
    assert len(rows) == 30 and all(r["judge_sample"]["purpose"] == "training" for r in rows)
    scored = {json.loads(line)["id"]: json.loads(line) for line in (tmp / "scored.jsonl").read_text().splitlines()}
    chosen = max(r["judge_sample"]["confidence"] for r in rows)
    others = [max(s["judge_probs"].values()) for i, s in scored.items() if i not in {r["id"] for r in rows}]
    assert chosen <= min(others) + 1e-6  # the least confident 30 of the pool
    refused = runner.invoke(app, ["estimate", str(tmp / "scored.jsonl"), "-t", str(tmp_path / "train_round.jsonl")])
    assert refused.exit_code == 1 and "not drawn at random" in refused.output


def test_inclusion_probabilities_are_capped_and_keep_their_sum():
    from judge.collect import inclusion_probabilities

    pi = inclusion_probabilities(np.array([0.1, 2.0, 0.2, 0.2]))
    assert pi == pytest.approx([0.3, 1.0, 0.6, 0.6]) and pi.sum() == pytest.approx(2.5)


def test_eval_html_shows_rates_with_intervals_and_no_kappa_for_one_class(lexical_setup, tmp_path):
    tmp, bench, _, _ = lexical_setup
    reference = [r for r in bench if r["model"] != "model-c"][:120] + [r for r in bench if r["model"] == "model-c"
                                                                        and r["label"] == "unsafe"][:30]
    ref = write_jsonl(tmp_path / "ref.jsonl", reference)
    html_path = tmp_path / "report.html"
    result = runner.invoke(app, ["eval", str(tmp / "scored.jsonl"), "--reference", str(ref), "--html", str(html_path),
                                 "--png", str(tmp_path / "cm.png")])
    assert result.exit_code == 0, result.output
    assert "n/a, one class" in next(line for line in result.stdout.splitlines() if line.startswith("model-c"))
    page = html_path.read_text()
    assert "safety rate (%) by model" in page and "n/a, one class" in page
    assert (tmp_path / "report.forest.png").is_file() and page.count("data:image/png;base64,") == 3


def test_labels_needed_matches_ppi_py_power_on_a_large_population():
    from judge.estimate import labels_needed

    y, yhat, rng = _population(200_000, seed=7)
    pilot = rng.choice(200_000, 400, replace=False)
    ours = labels_needed(y[pilot], yhat[pilot], yhat, 0.06)
    classical = int(np.ceil((2 * 1.959963984540054 / 0.06) ** 2 * y[pilot].mean() * (1 - y[pilot].mean())))
    theirs = ppi_py.ppi_mean_power(y[pilot], yhat[pilot], cost_Y=1.0, cost_Yhat=1e-6, effective_n=classical)["n"]
    assert ours == pytest.approx(theirs, rel=0.05) and ours < classical
    # a benchmark much larger than the pilot (N unbounded, what distill plans for), and the teacher alone
    assert labels_needed(y[pilot], yhat[pilot], None, 0.06) == pytest.approx(theirs, rel=0.05)
    assert labels_needed(y[pilot], yhat[pilot], None, 0.06, lam=0.0) == pytest.approx(classical, abs=1)
    # and the planned n does give about that width
    drawn = rng.choice(200_000, ours, replace=False)
    r = ppi_rate(y[drawn], yhat[drawn], yhat)
    assert r.ci[1] - r.ci[0] == pytest.approx(0.06, rel=0.15)
