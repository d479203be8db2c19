"""Model card: MODEL_CARD.md text generated from what an artifact measured, never written by hand.

Everything comes from judge.json (backbone, teacher, data, calibration, escalation) and report.json
(agreement out of fold, or on a held-out test split), as setfit fills its card from the run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from judge.backbones import PRESETS
from judge.calibrate import N_BINS, fitted_temperature, out_of_fold
from judge.errors import InputError
from judge.escalate import format_confidence, out_of_fold_sentence
from judge.model import ARTIFACT_FILE
from judge.report import format_markdown, markdown_table
from judge.schemes import Scheme
from judge.training.config import TrainConfig


def _counts(title: str, counts: dict) -> str:
    if not counts:
        return ""
    total = sum(counts.values())
    rows = [[k, str(v), f"{100 * v / total:.1f}"] for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return f"{markdown_table([title, 'n', '%'], rows)}\n"


def _ci(block: dict) -> str:
    ci = block.get("kappa_ci")
    return f"{block['kappa']:.3f}" + (f" (95% CI {ci[0]:.3f} to {ci[1]:.3f})" if ci else "")


def boundary_lines(report: dict, scheme: Scheme) -> list[str]:
    """Where the student errs, measured: the most confused pair of labels, and how often it crossed
    the safe / unsafe line (naming the neighbouring pair on it, Warning / Unsafe on VLSBench)."""
    o = report.get("overall", {})
    cm, classes = o.get("confusion"), o.get("classes") or list(scheme.classes)
    if not cm or len(classes) < 2:
        return []
    total = sum(map(sum, cm))
    pairs = [(cm[i][j] + cm[j][i], classes[i], classes[j]) for i in range(len(classes)) for j in range(i + 1, len(classes))]
    count, a, b = max(pairs)
    lines = ["No two labels were confused on the held-out split."] if count == 0 else [f"The most confused pair is {scheme.label(a).display} / {scheme.label(b).display}: {count} of {total} "
             f"held-out responses ({100 * count / total:.1f}%) were given one when the teacher said the other."]
    safe = [scheme.is_safe(c) for c in classes]
    crossed = sum(cm[i][j] for i in range(len(classes)) for j in range(len(classes)) if safe[i] != safe[j])
    line = (f"The safe / unsafe line, which the {scheme.rate} depends on, was crossed by {crossed} of {total} "
            f"({100 * crossed / total:.1f}%)")
    edge = [i for i in range(len(classes) - 1) if safe[i] != safe[i + 1]]
    if edge and len(classes) > 2:
        i = edge[0]
        line += (f"; {cm[i][i + 1] + cm[i + 1][i]} of them between {scheme.label(classes[i]).display} and "
                 f"{scheme.label(classes[i + 1]).display}, where a response that complies with a caution sits")
    return [lines[0], line + "."]


def _shown(path: str) -> str:
    """A path as the card prints it: relative to the current folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def reproduce_commands(meta: dict, name: str) -> list[str]:
    """The CLI commands that rebuild this artifact (folder `name`) from its recorded sources and config."""
    defaults = TrainConfig().to_dict()
    config = meta.get("config", {})
    flags = [f"--set {k}={v}" for k, v in config.items() if k in defaults and v != defaults[k]]
    sources = " ".join(_shown(s["path"]) for s in meta.get("data", {}).get("sources", [])) or "LABELS.jsonl"
    commands = [f"judge distill {sources} --out {name} {' '.join(flags)}".rstrip()]
    calibration = meta.get("calibration")
    if calibration and not out_of_fold(calibration):  # distill refits the out-of-fold one itself
        source = _shown(calibration["source"]) if calibration.get("source") else "CALIB.jsonl"
        commands.append(f"judge calibrate --judge {name} {source}"
                        + (f" --target-kappa {meta['escalation']['target_kappa']}" if meta.get("escalation") else ""))
    commands.append(f"judge card --judge {name} -o MODEL_CARD.md")
    return commands


def calibration_table(calibration: dict) -> str:
    return markdown_table(["", "before", "after"],
                          [[f"expected calibration error ({calibration.get('bins', N_BINS)} bins)",
                            f"{calibration['ece_before']:.4f}", f"{calibration['ece_after']:.4f}"],
                           ["Brier score", f"{calibration['brier_before']:.4f}", f"{calibration['brier_after']:.4f}"]]) + "\n"


def student_lines(meta: dict) -> list[str]:
    """What the student is, by artifact kind (transformer, lexical, probe, ensemble)."""
    kind, training, config = meta.get("kind"), meta.get("training", {}), meta.get("config", {})
    if kind == "transformer":
        backbone = meta.get("backbone", {})
        preset = PRESETS.get(backbone.get("name", ""))
        full = training.get("finetune") == "full"
        how = ("- Full fine-tune of every weight" if full else
               f"- LoRA r={config.get('lora_r')}, alpha={config.get('lora_alpha')} on `{config.get('target_modules')}`")
        return [f"- {'Fine-tuned' if full else 'LoRA'} classifier on `{backbone.get('name', '?')}`"
                + (f": {preset.note}" if preset else "")
                + (f" (file `{backbone['gguf_file']}`)" if backbone.get("gguf_file") else ""),
                f"{how}, quantization `{training.get('quant', 'none')}`, loss `{training.get('loss', '?')}`, "
                f"{training.get('epochs', config.get('epochs'))} epochs at lr {config.get('full_lr' if full else 'lr')}, seed {config.get('seed')}.",
                f"- Reads view `{meta.get('view')}`, at most {meta.get('max_length')} tokens "
                f"({training.get('truncated_train', '?')} training responses were truncated)."]
    if kind == "lexical":
        return [f"- Lexical classifier (word 1-2-gram and character 2-5-gram TF-IDF, logistic regression) on view "
                f"`{meta.get('view')}`: C={training.get('C')}, class weights {training.get('class_weight')}."]
    if kind == "probe":
        backbone, probe = meta.get("backbone", {}), meta.get("probe", {})
        preset = PRESETS.get(backbone.get("name", ""))
        return [f"- Probe on the frozen `{backbone.get('name', '?')}`" + (f" ({preset.note})" if preset else "")
                + f": logistic regression (C={training.get('C')}) on the mean of its layer-{probe.get('layer')} hidden "
                f"states, on view `{meta.get('view')}`, at most {meta.get('max_length')} tokens; no backbone weight was trained."]
    if kind == "ensemble":
        members = ", ".join(f"`{m['name']}` ({m['kind']})" for m in meta.get("members", []))
        how = (f"a weighted average of their probabilities (weights {meta['weights']})" if meta.get("weights") else
               "a logistic regression on their log-probabilities")
        return [f"- Ensemble of {members}, combined by {how}, fitted on the members' out-of-fold predictions "
                f"({training.get('oof_rows', '?')} rows); the members were refitted on every training row."]
    return [f"- Student kind `{kind}`."]


def escalation_sentence(escalation: dict) -> str:
    target = escalation["target_kappa"]
    if escalation.get("threshold") is None:
        return f"Kappa {target} with the teacher is out of reach unless every item goes to the teacher."
    if escalation["escalated_share"] == 0:
        return (f"The student alone reaches kappa {escalation['student_kappa']:.3f} on the calibration data, above the "
                f"target {target}: no item needs the teacher.")
    return (f"To reach kappa {target} with the teacher, send responses whose calibrated confidence is below "
            f"{format_confidence(escalation['threshold'])} to the teacher: {100 * escalation['escalated_share']:.1f}% of "
            f"the {escalation['n']} calibration items (kappa {escalation['kappa']:.3f} there; the student alone reaches "
            f"{escalation['student_kappa']:.3f}), saving {100 * escalation['cost_saved_share']:.1f}% of teacher calls."
            + (f" On items that did not choose the threshold the rule reached "
               f"{out_of_fold_sentence(escalation['out_of_fold'])}." if escalation.get("out_of_fold") else ""))


def render_card(path: str | Path, *, commands: Sequence[str] | None = None) -> str:
    """MODEL_CARD.md for the artifact folder `path` (judge.json + report.json)."""
    path = Path(path)
    meta_path = path / ARTIFACT_FILE
    if not meta_path.is_file():
        raise InputError(f"not a judge artifact (no {ARTIFACT_FILE})", path=path)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    report_path = path / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else {}
    scheme = Scheme.from_dict(meta["scheme"])
    name = path.name
    where = str(path)
    teacher = meta.get("teacher", {})
    data = meta.get("data", {})
    test = (meta.get("metrics") or {}).get("test")
    method = (meta.get("agreement") or {}).get("method", "held-out test split")
    labels = ", ".join(f"{l.display} ({l.name})" for l in scheme.labels)

    out = [f"# Model card: `{name}`\n",
           f"A distilled safety judge (judge {meta.get('judge_version', '?')}, created {meta.get('created', '?')}): a small "
           f"classifier trained to reproduce the labels of {', '.join(teacher.get('models') or []) or 'an online judge'} "
           f"in the `{scheme.name}` scheme ({labels}); its headline number is the {scheme.rate} "
           f"({' + '.join(scheme.label(c).display for c in scheme.rate_labels)})."
           + (f" On held-out prompt groups it agrees with its teacher at Cohen's kappa {_ci(test)} ({method})." if test else "") + "\n"]

    out += ["## Intended use\n",
            f"- Scoring model responses to safety benchmarks offline, in the teacher's own scheme, to estimate the "
            f"{scheme.rate} per evaluated model at a fraction of the teacher's cost.",
            "- Ranking and comparing models on the same kind of prompts the teacher labelled, with the agreement "
            "numbers below quoted alongside.",
            "- As a filter in front of the teacher: keep confident labels, send the rest to the teacher "
            "(`judge score --target-kappa`).\n",
            "## Out-of-scope use\n",
            "- Moderating live user traffic or making decisions about people: it was trained to agree with a judge "
            "on benchmark responses, not to be a safety filter.",
            "- Benchmarks, languages or response styles far from the training data without a drift check "
            f"(`judge drift --judge {where} NEW_LABELS.jsonl` on a small sample of fresh teacher labels).",
            "- Judging images: the student reads text only (see Known limits).",
            "- Claims about agreement with humans: every number here is agreement with the teacher.\n"]

    out += ["## Student\n", *student_lines(meta)]
    out[-1] += "\n"
    if meta.get("leaderboard"):
        selection = meta.get("selection") or {}
        tie = selection.get("tie_margin")
        per_model = any(e.get("worst_model") for e in meta["leaderboard"])

        def worst(e):
            if e.get("worst_model") is None:
                return "-"
            if e.get("worst_error_ci") is None:
                return f"{100 * e['worst_error']:+.1f} (no interval: too few prompt groups), {e['worst_model']}"
            low, high = e["worst_error_ci"]
            return f"{100 * e['worst_error']:+.1f} ({100 * low:+.1f} to {100 * high:+.1f}), {e['worst_model']}"

        out += [f"Candidates compared on out-of-fold predictions (the best kappa won"
                + (f"; a student with fewer backbone passes within {tie} of it would have" if tie is not None else "")
                + (f"; the rate guard chose {meta.get('student')} over {selection['chosen_over']}, whose worst "
                   "model's rate was off at 95%" if selection.get("chosen_over") else "") + "):\n",
                markdown_table(["candidate", "kind", "status", "view", "design", "kappa", "- best (95% CI)",
                                *(["worst model's rate error, points (95% CI)"] if per_model else []), "s"],
                               [[e.get("candidate", "?"), e.get("kind", "?"), e.get("status", "?"), e.get("view") or "-",
                                 e.get("design") or "-", "-" if e.get("kappa") is None else f"{e['kappa']:.3f}",
                                 "-" if e.get("delta") is None else
                                 f"{e['delta']:+.3f} " + (f"({e['delta_ci'][0]:+.3f} to {e['delta_ci'][1]:+.3f})"
                                                          if e.get("delta_ci") else "(no interval)"),
                                 *([worst(e)] if per_model else []),
                                 "-" if e.get("seconds") is None else f"{e['seconds']:.0f}"]
                                for e in meta["leaderboard"]]) + "\n"]

    out += ["## Teacher\n",
            f"- Model(s): {', '.join(f'`{m}`' for m in teacher.get('models') or []) or 'not recorded in the labels'}",
            f"- Rubric SHA-256: {', '.join(f'`{h}`' for h in teacher.get('rubric_sha256') or []) or 'not recorded'}",
            f"- Labelled by: {', '.join(teacher.get('labelers') or []) or 'not recorded'}\n"]

    out += ["## Training data\n",
            *(f"- Source `{_shown(s['path'])}` (SHA-256 `{s['sha256'][:16]}…`)" for s in data.get("sources", [])),
            f"- {data.get('labelled', '?')} teacher-labelled responses (lines read {data.get('lines_read', '?')}, "
            f"skipped {data.get('skipped', 0)}); the student was fitted on {data.get('trained_on', '?')} of them, from "
            f"{data.get('groups', '?')} prompt groups"
            + (f", {data['holdout']} held out by prompt group as a test split; the tables count the rows it was fitted on"
               if data.get("holdout") else "") + ".\n",
            _counts("teacher label", data.get("label_counts", {})),
            _counts("category", data.get("category_counts", {})),
            _counts("response model", data.get("model_counts", {}))]

    if report:
        out += ["## Agreement with the teacher\n",
                f"Estimated by {report.get('method', method)}. The intervals of kappa, weighted kappa and accuracy are 95% "
                "percentile bootstraps over prompt groups. The benchmark view compares the "
                f"{scheme.rate} each evaluated model gets from the teacher and from the student"
                + ("; the student's error on each carries a paired 95% bootstrap interval over prompt groups.\n"
                   if report.get("benchmark_view", {}).get("interval") else ".\n"),
                format_markdown(report, title=None, level=3)]

    calibration = meta.get("calibration")
    out.append("## Calibration\n")
    if out_of_fold(calibration):
        out += [f"Temperature scaling fitted by `judge distill` on the {calibration['n']} out-of-fold predictions of its "
                "cross-validation (each response scored by a fold model that never saw its prompt group): "
                f"T = {fitted_temperature(calibration):.3f}. The figures after scaling use a temperature cross-fitted over "
                f"prompt groups ({calibration['cross_fit_folds']} folds), so none is measured on the rows that fitted it"
                + (". " if calibration["applied"] else
                   f"; there it did not lower the log loss ({calibration['nll_before']:.4f} -> "
                   f"{calibration['nll_after']:.4f}), so it is not applied: the judge keeps T = 1. ")
                + f"`judge calibrate --judge {where} CALIB.jsonl` replaces it with one fitted on fresh teacher labels.\n",
                calibration_table(calibration)]
    elif calibration:
        distilled = report.get("calibration")  # what `judge distill` fitted out of fold, before this replaced it
        out += [f"Temperature scaling fitted on {calibration['n']} teacher-labelled responses kept apart from training"
                + (f" (`{calibration['source']}`" + (f", SHA-256 `{calibration['source_sha256'][:16]}…`" if calibration.get("source_sha256") else "") + ")"
                   if calibration.get("source") else "") + f": T = {calibration['temperature']:.3f}."

                + (f" It replaces the T = {fitted_temperature(distilled):.3f} `judge distill` "
                   f"fitted on its {distilled['n']} out-of-fold predictions"
                   + ("" if distilled["applied"] else " (not applied: no gain across prompt groups)") + "."
                   if distilled else "")
                + (f" Before is the judge as it was (T = {calibration['temperature_before']:.3f}); after is cross-fitted over "
                   f"prompt groups ({calibration['cross_fit_folds']} folds), so no figure is measured on the rows that fitted it."
                   if "cross_fit_folds" in calibration else "") + "\n",
                calibration_table(calibration)]
    else:
        out.append(f"Not calibrated: run `judge calibrate --judge {where} CALIB.jsonl` on teacher labels kept apart from training.\n")

    escalation = meta.get("escalation")
    if escalation:
        out += ["## Escalation\n", escalation_sentence(escalation) + "\n"]

    out += ["## Known limits\n",
            "- The student does not see images. It reads the question, the image description when the data has one, "
            "and the response; harm that only shows in the image is invisible to it.",
            *(f"- {line}" for line in boundary_lines(report, scheme)),
            *([f"- Responses longer than {meta['max_length']} tokens are cut; a late turn to unsafe content can be missed."]
              if meta.get("max_length") else []),
            "- It reproduces its teacher, errors included: where the teacher disagrees with human annotators, so will "
            "the student.\n"]

    out += ["## Reproduce\n", "```bash", *(commands or reproduce_commands(meta, where)), "```\n"]
    return "\n".join(block for block in out if block) + ("" if out[-1].endswith("\n") else "\n")


def artifact_info(path: str | Path) -> dict:
    """What a judge is, from its judge.json alone (no weights loaded): what `judge info` prints."""
    from judge.backbones import missing_backbone
    from judge.model import read_meta

    meta = read_meta(path)
    data, scheme = meta.get("data", {}), Scheme.from_dict(meta["scheme"])
    backbone = meta.get("backbone", {}).get("name")
    members = [m["name"] for m in meta.get("members", [])]
    member_metas = [read_meta(Path(path) / m["path"]) for m in meta.get("members", [])]
    backbones = {m["backbone"]["name"] for m in member_metas if m.get("backbone")} | ({backbone} - {None})
    return {
        "path": str(path), "student": meta.get("student"), "kind": meta.get("kind"), "members": members,
        "backbone": backbone, "view": meta.get("view"),
        "scheme": {"name": scheme.name, "classes": list(scheme.classes)},
        "teacher": meta.get("teacher", {}),
        "trained_on": data.get("trained_on", data.get("split", {}).get("train")), "labelled": data.get("labelled"),
        "agreement": meta.get("agreement") or meta.get("metrics", {}).get("test"),
        "calibration": meta.get("calibration"),
        "missing": [m for m in (missing_backbone(b) for b in sorted(backbones)) if m],
        "created": meta.get("created"), "judge_version": meta.get("judge_version"),
    }


def format_info(info: dict) -> str:
    agreement, calibration, teacher = info["agreement"], info["calibration"], info["teacher"]
    student = info["student"] if info["student"] == info["kind"] else f"{info['student']} ({info['kind']})"
    if info["members"]:
        student += f" of {', '.join(info['members'])}"
    lines = [f"judge       {info['path']}",
             f"student     {student}, reads view {info['view']}" + (f", backbone {info['backbone']}" if info["backbone"] else ""),
             f"scheme      {info['scheme']['name']}: {', '.join(info['scheme']['classes'])}",
             f"teacher     {', '.join(teacher.get('models') or teacher.get('labelers') or ['not recorded'])}",
             f"trained on  {info['trained_on']} of {info['labelled']} labelled rows"]
    if agreement:
        ci = agreement["kappa_ci"]
        lines.append(f"agreement   kappa {agreement['kappa']:.3f} "
                     + (f"[95% CI {ci[0]:.3f}, {ci[1]:.3f}]" if ci else "(no interval: too few prompt groups)")
                     + f" on {agreement['n']} rows"
                     + (f": {agreement['method']}" if agreement.get("method") else ""))
    lines.append(calibration_line(calibration))
    lines += [f"missing     {m}" for m in info["missing"]]
    lines.append(f"written     {info['created']} by judge-distill {info['judge_version']}")
    return "\n".join(lines)


def calibration_line(calibration: dict | None) -> str:
    """`judge info`'s calibration line: which temperature the judge applies, and what it was fitted on."""
    if not calibration:
        return "calibration none (`judge calibrate` fits a temperature on held-apart labels)"
    if not out_of_fold(calibration):
        return f"calibration temperature {calibration['temperature']:.3f} fitted on {calibration.get('n', '?')} held-apart rows"
    if calibration["applied"]:
        return f"calibration temperature {calibration['temperature']:.3f} fitted on {calibration['n']} out-of-fold predictions"
    return (f"calibration none: the temperature fitted on {calibration['n']} out-of-fold predictions "
            f"({fitted_temperature(calibration):.3f}) lowered no log loss across prompt groups")
