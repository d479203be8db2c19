"""Render report dicts (judge.evaluate) as text tables and PNG plots. No numbers are computed here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from judge.metrics import is_nan


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


def format_rates(summary: dict, classes: Sequence[str]) -> str:
    """% of each label and the headline rate, overall and per model / category / scenario."""
    header = ["", "n", *(f"% {c}" for c in classes), summary["rate_name"]]
    def row(name, r):
        return [name, str(r["n"]), *(_pct(r[c]) for c in classes), _pct(r["rate"])]
    blocks = [table(header, [row("overall", summary["overall"])])]
    for field, groups in summary["by"].items():
        blocks.append(table([field, *header[1:]], [row(k, v) for k, v in groups.items()]))
    return "\n\n".join(blocks)


def format_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str]) -> str:
    return table(["teacher \\ student", *classes], [[c, *map(str, row)] for c, row in zip(classes, cm)])


def format_agreement(report: dict) -> str:
    """Kappa (with interval), accuracy, macro-F1, per-class P/R/F1 and the confusion matrix; then breakdowns."""
    o = report["overall"]
    classes = o["classes"]
    ci = o.get("kappa_ci")
    lines = [f"n={o['n']}  kappa={_num(o['kappa'])}" + (f" [95% CI {_num(ci[0])}, {_num(ci[1])}]" if ci else "")
             + (f"  weighted kappa={_num(o['weighted_kappa'])}" if o.get("weighted_kappa") is not None else "")
             + f"  accuracy={_num(o['accuracy'])}  macro-F1={_num(o['macro_f1'])}"]
    if "binary" in o:
        lines.append(f"binary safe/unsafe: kappa={_num(o['binary']['kappa'])}  accuracy={_num(o['binary']['accuracy'])}")
    lines += ["", table(["class", "precision", "recall", "F1", "support"],
                        [[c, _num(v["precision"]), _num(v["recall"]), _num(v["f1"]), str(v["support"])]
                         for c, v in o["per_class"].items()])]
    lines += ["", format_confusion(o["confusion"], classes)]
    rates = report.get("rates")
    if rates:
        lines += ["", table(["", *(f"% {c}" for c in classes), rates["rate_name"]],
                            [[who, *(_pct(rates[who][c]) for c in classes), _pct(rates[who]["rate"])]
                             for who in ("teacher", "student")])]
    for field, groups in report.get("by", {}).items():
        lines += ["", table([field, "n", "kappa", "accuracy", "macro-F1"],
                            [[k, str(v["n"]), _num(v["kappa"]), _num(v["accuracy"]), _num(v["macro_f1"])]
                             for k, v in groups.items()])]
    view = report.get("benchmark_view")
    if view:
        name = view["rate_name"]
        lines += ["", table([view["field"], "n", f"teacher {name}", f"student {name}", "abs error"],
                            [[k, str(v["n"]), _pct(v["teacher"]["rate"]), _pct(v["student"]["rate"]), _pct(v["abs_error"])]
                             for k, v in view["rows"].items()])]
        if view["kendall_tau"] is not None:
            lines.append(f"Kendall's tau between the teacher's and the student's model rankings: {view['kendall_tau']:.3f}")
    return "\n".join(lines)


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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
