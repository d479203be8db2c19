"""Render report dicts (judge.evaluate) as text, Markdown or one self-contained HTML file, and PNG plots.

No numbers are computed here. `agreement_blocks` lays a report out once (paragraphs and tables);
each format only renders those blocks, so the three always show the same tables.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from judge.metrics import MIN_GROUPS, is_nan


def _pct(value: float | None) -> str:
    return "   -  " if is_nan(value) else f"{100 * value:6.2f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "  -  " if is_nan(value) else f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table (first column left-aligned, the rest right-aligned)."""
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table (first column left-aligned, the rest right-aligned)."""
    def line(cells):
        return "| " + " | ".join(str(c).strip().replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|", *map(line, rows)])


def format_rates(summary: dict, classes: Sequence[str]) -> str:
    """% of each label and the headline rate, overall and per model / category / scenario (and the share
    of top labels beside the rate, where the rates are mean probabilities)."""
    counted = "label_rate" in summary["overall"]
    header = ["", "n", *(f"% {c}" for c in classes), summary["rate_name"], *(["top labels"] if counted else [])]
    def row(name, r):
        return [name, str(r["n"]), *(_pct(r[c]) for c in classes), _pct(r["rate"]), *([_pct(r["label_rate"])] if counted else [])]
    blocks = [table(header, [row("overall", summary["overall"])])]
    for field, groups in summary["by"].items():
        blocks.append(table([field, *header[1:]], [row(k, v) for k, v in groups.items()]))
    if counted:
        blocks.append(f"% and {summary['rate_name']}: the mean of the student's probabilities, the estimate of the "
                      "teacher's rate; top labels: the share of the labels written (biased toward the majority "
                      "class where the student is unsure). For an interval: judge estimate.")
    return "\n\n".join(blocks)


def format_confusion(cm: Sequence[Sequence[float]], classes: Sequence[str], *, normalized: bool = False) -> str:
    cell = _num if normalized else str
    return table(["teacher \\ student", *classes], [[c, *map(cell, row)] for c, row in zip(classes, cm)])


def agreement_blocks(report: dict) -> list[tuple]:
    """The report laid out as ("text", paragraph) and ("table", title, header, rows) blocks."""
    o = report["overall"]
    classes = o["classes"]
    blocks: list[tuple] = [("text", f"n={o['n']}  kappa={with_ci(o, 'kappa')}"
                            + (f"  weighted kappa={with_ci(o, 'weighted_kappa')}" if o.get("weighted_kappa") is not None else "")
                            + f"  accuracy={with_ci(o, 'accuracy')}  macro-F1={_num(o['macro_f1'])}")]
    if "binary" in o:
        blocks.append(("text", f"binary safe/unsafe: kappa={with_ci(o['binary'], 'kappa')}  "
                               f"accuracy={with_ci(o['binary'], 'accuracy')}"))
    if o.get("interval"):
        blocks.append(("text", f"95% CIs: {o['interval']}"))
    blocks.append(("table", "per class", ["class", "precision", "recall", "F1", "support"],
                   [[c, _num(v["precision"]), _num(v["recall"]), _num(v["f1"]), str(v["support"])]
                    for c, v in o["per_class"].items()]))
    blocks.append(("table", "confusion matrix (counts; rows = teacher, columns = student)",
                   ["teacher \\ student", *classes], [[c, *map(str, row)] for c, row in zip(classes, o["confusion"])]))
    if o.get("confusion_normalized"):
        blocks.append(("table", "confusion matrix (row-normalized: share of each teacher label)",
                       ["teacher \\ student", *classes],
                       [[c, *map(_num, row)] for c, row in zip(classes, o["confusion_normalized"])]))
    rates = report.get("rates")
    if rates:
        blocks.append(("table", "rates by the teacher and by the student"
                       + (f" (student: {rates['student_rate']})" if rates.get("student_rate") else ""),
                       ["", *(f"% {c}" for c in classes), rates["rate_name"]],
                       [[who, *(_pct(rates[who][c]) for c in classes), _pct(rates[who]["rate"])]
                        for who in ("teacher", "student")]))
    for field, groups in report.get("by", {}).items():
        blocks.append(("table", f"agreement by {field}" + (f" (95% CIs: {report['by_interval']})" if report.get("by_interval") else ""),
                       [field, "n", "kappa [95% CI]", "accuracy [95% CI]", "macro-F1"],
                       [[k, str(v["n"]), _kappa_cell(v), with_ci(v, "accuracy", said=""), _num(v["macro_f1"])]
                        for k, v in groups.items()]))
    view = report.get("benchmark_view")
    if view:
        blocks.append(("table", f"benchmark view: {view['rate_name']} per {view['field']}", *benchmark_table(view)))
        if view.get("interval"):
            blocks.append(("text", f"student - teacher: the student's error in points, {view['interval']}"
                           + (f"; the student's rate: {view['student_rate']}" if view.get("student_rate") else "")))
        if view["kendall_tau"] is not None:
            blocks.append(("text", "Kendall's tau between the teacher's and the student's model rankings: "
                                   + with_ci(view, "kendall_tau")))
    plan = report.get("labels_plan")
    if plan:
        blocks.append(("table", f"teacher labels per {plan['by']} for a {1 - plan['alpha']:.0%} interval of "
                       f"+-{50 * plan['width']:.0f} points on its {plan['rate_name']} (planned on {plan['overall']['n']} "
                       "rows the student did not learn from)",
                       [plan["by"], "rows", "with this student (PPI++)", "teacher labels alone"],
                       [[k, str(g["n"]), *("-" if g[key] is None else str(g[key]) for key in ("with_student", "teacher_only"))]
                        for k, g in [*plan["groups"].items(), ("overall", plan["overall"])]]))
        blocks.append(("text", f"planned for responses like these ({plan['method']}); to get the intervals: "
                       "judge collect --sample N --per model, then judge estimate"))
    return blocks


def with_ci(figures: dict, name: str, *, said: str = "95% CI ") -> str:
    """`0.863 [95% CI 0.783, 0.937]`, a figure with its interval where one was computed (`said=""` in a
    table whose header names the interval)."""
    ci = figures.get(f"{name}_ci")
    if ci is None and figures.get("groups", MIN_GROUPS) < MIN_GROUPS:
        return _num(figures[name]) + f" [no interval: {_count(figures['groups'], 'prompt group')}]"
    return _num(figures[name]) + (f" [{said}{_num(ci[0])}, {_num(ci[1])}]" if ci else "")


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _kappa_cell(group: dict) -> str:
    """Kappa, or why there is none: with one teacher class kappa is 0 or undefined whatever the student does."""
    if sum(v["support"] > 0 for v in group["per_class"].values()) == 1:
        return "n/a, one class"
    return with_ci(group, "kappa", said="")


def benchmark_table(view: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the teacher-vs-student rate table (the one a paper quotes), with the student's
    error and its interval (reports written before those were recorded show the absolute error)."""
    name = view["rate_name"]
    if not all("error_ci" in v for v in view["rows"].values()):
        return ([view["field"], "n", f"teacher {name}", f"student {name}", "abs error"],
                [[k, str(v["n"]), _pct(v["teacher"]["rate"]), _pct(v["student"]["rate"]), _pct(v["abs_error"])]
                 for k, v in view["rows"].items()])
    return ([view["field"], "n", f"teacher {name}", f"student {name}", "student - teacher", "95% CI"],
            [[k, str(v["n"]), _pct(v["teacher"]["rate"]), _pct(v["student"]["rate"]), _points(v["error"]),
              f"[{_points(v['error_ci'][0])}, {_points(v['error_ci'][1])}]" if v["error_ci"]
              else f"none: {_count(v['groups'], 'prompt group')}"] for k, v in view["rows"].items()])


def _points(value: float | None) -> str:
    return "-" if is_nan(value) else f"{100 * value:+.1f}"


def format_agreement(report: dict) -> str:
    """Kappa (with interval), accuracy, macro-F1, per-class P/R/F1, both confusion matrices; then breakdowns."""
    out = []
    for block in agreement_blocks(report):
        out.append(block[1] if block[0] == "text" else f"{block[1]}:\n{table(block[2], block[3])}")
    return "\n\n".join(out)


def format_markdown(report: dict, title: str | None = "Agreement with the teacher", level: int = 2) -> str:
    """Markdown: a `level` heading (none without `title`), then one sub-heading per table."""
    out = [f"{'#' * level} {title}"] if title else []
    sub = "#" * (level + 1 if title else level)
    for block in agreement_blocks(report):
        out.append(block[1] if block[0] == "text" else
                   f"{sub} {block[1][:1].upper()}{block[1][1:]}\n\n{markdown_table(block[2], block[3])}")
    return "\n\n".join(out) + "\n"


def _png_data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def format_html(report: dict, images: Sequence[str | Path] = (), title: str = "Agreement with the teacher",
                estimate: dict | None = None) -> str:
    """One self-contained HTML page: every table, and the plots embedded as base64 PNG; with ``estimate``
    (judge.estimate) also the per-model rates with their intervals (draw its forest plot into ``images``)."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
             "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;margin:0.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
             "</style></head><body>", f"<h1>{esc(title)}</h1>"]
    for block in [*agreement_blocks(report), *(estimate_blocks(estimate) if estimate else [])]:
        if block[0] == "text":
            parts.append(f"<p>{esc(block[1])}</p>")
            continue
        _, name, header, rows = block
        parts.append(f"<h3>{esc(name)}</h3><table><tr>{''.join(f'<th>{esc(h)}</th>' for h in header)}</tr>"
                     + "".join("<tr>" + "".join(f"<td>{esc(str(c).strip())}</td>" for c in row) + "</tr>" for row in rows)
                     + "</table>")
    for image in images:
        parts.append(f"<p><img alt='{esc(Path(image).stem)}' src='{_png_data_uri(image)}'></p>")
    return "\n".join([*parts, "</body></html>\n"])


REPORT_FORMATS = ("text", "json", "markdown")


def render_report(report: dict, fmt: str = "text") -> str:
    """The agreement report as text, JSON or Markdown (see `REPORT_FORMATS`)."""
    import json

    if fmt not in REPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(REPORT_FORMATS)}, got {fmt!r}")
    return {"text": format_agreement, "markdown": format_markdown,
            "json": lambda r: json.dumps(r, indent=2)}[fmt](report)


def plot_confusions(report: dict, path: str | Path) -> list[Path]:
    """Both confusion PNGs: counts at `path`, row-normalized beside it (``*_normalized.png``)."""
    path = Path(path)
    o = report["overall"]
    return [plot_confusion(o["confusion"], o["classes"], path),
            plot_confusion(o["confusion"], o["classes"], path.with_name(f"{path.stem}_normalized.png"), normalize=True,
                           title="share of each teacher label (rows sum to 1)")]


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, *,
                   title: str = "teacher (rows) vs student (columns)", normalize: bool = False) -> Path:
    """Save the confusion matrix as a PNG (counts, or row-normalized shares)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(cm, dtype=float)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(classes) + 2, 1.4 * len(classes) + 1.5))
    ConfusionMatrixDisplay(matrix if normalize else matrix.astype(int), display_labels=list(classes)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=".2f" if normalize else "d")
    ax.set_xlabel("student")
    ax.set_ylabel("teacher")
    ax.set_title(title)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG at exactly `path` (creating its folder) and free it.

    The format is fixed: left to matplotlib, a path without a suffix would get ``.png`` appended (so
    the path we print would not exist) and one ending ``.pdf`` would not be a PNG.
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
    return path


# -- rate estimates (judge.estimate) -----------------------------------------------------------

def _ci(interval: Sequence[float] | None) -> str:
    return "-" if interval is None else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _interval_kind(method: str | None) -> str:
    """A row's interval in a word (judge.estimate.METHOD): ppi++, stratified (k strata), weighted; * widened."""
    if method is None:
        return "-"
    kind = (f"stratified ({method.split()[2]})" if method.startswith("stratified")
            else "weighted" if method.startswith("ipw") else "ppi++")
    return kind + (" *" if "widened" in method else "")


def _share(value: float | None) -> str:
    return "-" if is_nan(value) else f"{100 * value:.1f}"


def estimate_blocks(result: dict) -> list[tuple]:
    """An estimate (judge.estimate.estimate) laid out as text and table blocks, like `agreement_blocks`."""
    level = f"{100 * result['confidence']:.0f}%"
    name = result["rate_name"]
    header = ["", "n", "teacher n", f"student {name}", "estimate", f"{level} CI", "interval", f"teacher-only {level} CI",
              "effective n", "agreement"]

    def row(key: str, g: dict) -> list[str]:
        return [key, str(g["n"]), str(g["n_teacher"]), _share(g["student_rate"]), _share(g.get("estimate")),
                _ci(g.get("ci")), _interval_kind(g.get("interval")), _ci(g.get("teacher_only_ci")),
                "-" if g.get("effective_n") is None else f"{g['effective_n']:.0f}",
                _share(g.get("agreement")) + ("" if g.get("agreement") is None else "%")]

    blocks: list[tuple] = []
    for field, groups in result["by"].items():
        blocks.append(("table", f"{name} (%) by {field}: the teacher's rate estimated from the student's scores "
                       "and the teacher sample", [field, *header[1:]],
                       [row(k, g) for k, g in groups.items()] + [row("overall", result["overall"])]))
    first = result["groups"]
    shares = next(iter(first.values()), {}).get("shares") if first else None
    if shares:
        classes = list(shares)
        blocks.append(("table", f"share of each label (%): estimate [{level} CI] by {result['group_field']}",
                       [result["group_field"], *classes],
                       [[k, *(f"{_share(g['shares'][c].get('estimate'))} {_ci(g['shares'][c].get('ci'))}" for c in classes)]
                        for k, g in [*first.items(), ("overall", result["overall"])]]))
    if result.get("pairs"):
        blocks.append(("table", f"differences in {name} between {result['group_field']}s (points; Holm-adjusted over "
                       f"{len(result['pairs'])} pairs)", ["a - b", "difference", f"{level} CI", "p (Holm)", "distinguishable"],
                       [[f"{p['a']} - {p['b']}", f"{100 * p['difference']:+.1f}", _ci(p["ci"]), f"{p['p_holm']:.3f}",
                         "yes" if p["distinguishable"] else "no"] for p in result["pairs"]]))
    needed = {k: (g["labels_needed"], g["n"]) for k, g in first.items() if "labels_needed" in g}
    if needed:
        blocks.append(("table", "teacher labels needed per group for the target interval width (planned on this sample)",
                       [result["group_field"], "labels needed"],
                       [[k, "-" if v is None else f"{v}" + (f" (more than the {n} rows)" if v > n else "")]
                        for k, (v, n) in needed.items()]))
    blocks.append(("text", f"method: {result['method']}; alpha {result['alpha']} ({level} intervals); sampling design: "
                   f"{result['design']}. Teacher-only CI: Wilson score interval on the same labels within a stratum; "
                   "the strata's combined by size for a group of whole strata; inverse-probability weighted (Wald) "
                   "where inclusion probabilities differ. Interval *: widened to contain the Wilson interval (few teacher "
                   "labels on one side of the rate), or combined from strata that were."))
    warnings = list(result["warnings"])
    for field, groups in result["by"].items():
        warnings += [f"{field} {k}: {w}" for k, g in groups.items() for w in g["warnings"]]
    warnings += [f"overall: {w}" for w in result["overall"]["warnings"]]
    if warnings:
        blocks.append(("text", "warnings:\n" + "\n".join(f"  - {w}" for w in warnings)))
    return blocks


def render_estimate(result: dict, fmt: str = "text") -> str:
    """An estimate as text, JSON or Markdown (see `REPORT_FORMATS`)."""
    import json

    if fmt == "json":
        return json.dumps(result, indent=2)
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(REPORT_FORMATS)}, got {fmt!r}")
    out = []
    for block in estimate_blocks(result):
        if block[0] == "text":
            out.append(block[1])
        elif fmt == "markdown":
            out.append(f"**{block[1]}**\n\n{markdown_table(block[2], block[3])}")
        else:
            out.append(f"{block[1]}:\n{table(block[2], block[3])}")
    return "\n\n".join(out) + "\n"


def plot_forest(rows: dict[str, dict], path: str | Path, *, rate_name: str, level: str = "95%") -> Path:
    """One line per group: the student's own rate (its mean probability), the estimate with its interval, the teacher-only interval.

    ``rows`` maps a name to ``{"student_rate", "estimate", "ci", "teacher_only_ci"}`` (rates in [0, 1]);
    missing entries are not drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(names) + 1.4))
    for i, name in enumerate(names):
        y = len(names) - 1 - i
        g = rows[name]
        if g.get("teacher_only_ci"):
            ax.plot([100 * v for v in g["teacher_only_ci"]], [y - 0.18] * 2, color="0.6", lw=2,
                    label=f"teacher-only {level} CI" if i == 0 else None)
        if g.get("ci"):
            ax.plot([100 * v for v in g["ci"]], [y] * 2, color="C0", lw=3, label=f"estimate, {level} CI" if i == 0 else None)
        if g.get("estimate") is not None:
            ax.plot(100 * g["estimate"], y, "o", color="C0")
        if g.get("student_rate") is not None:
            ax.plot(100 * g["student_rate"], y + 0.18, "x", color="C3", label="student's own rate" if i == 0 else None)
    ax.set_yticks(range(len(names)), list(reversed(names)))
    ax.set_xlabel(f"{rate_name} (%)")
    ax.set_xlim(-2, 102)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return save_figure(fig, path)
