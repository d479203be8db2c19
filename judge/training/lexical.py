"""The lexical student: word 1-2-gram and character 2-5-gram TF-IDF with logistic regression.

One fit takes seconds, so the portfolio can afford to search what it reads (every view) and its
regularisation (C, class weighting) on validation kappa: 30 fits, about two minutes on XSTest's
long responses on a shared 2-core CPU. The features are fitted once per view and shared by every
C tried on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline

from judge.backends.lexical import MODEL_FILE, save_estimator
from judge.errors import InputError
from judge.metrics import kappa_from_confusion
from judge.records import Record
from judge.schemes import Scheme
from judge.splits import Split
from judge.views import VIEWS, render_text

CS = (1.0, 3.0, 10.0, 30.0, 100.0)
CLASS_WEIGHTS = (None, "balanced")


def make_features() -> FeatureUnion:
    return FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
    ])


def make_classifier(C: float, class_weight: str | None, seed: int = 0) -> LogisticRegression:
    return LogisticRegression(C=C, class_weight=class_weight, max_iter=3000, random_state=seed)


def kappa(y_true, y_pred, classes) -> float:
    k = kappa_from_confusion(confusion_matrix(y_true, y_pred, labels=list(classes)))
    return -1.0 if np.isnan(k) else k


@dataclass
class LexicalFit:
    pipeline: Pipeline
    view: str
    C: float
    class_weight: str | None
    val_kappa: float
    search: list[dict] = field(default_factory=list)

    def info(self) -> dict:
        return {"view": self.view, "C": self.C, "class_weight": self.class_weight, "val_kappa": self.val_kappa,
                "search": self.search}


def distinct_views(records: list[Record], views) -> list[str]:
    """Views that render differently on these records (without image descriptions, `image` = `question`)."""
    kept, seen = [], set()
    for view in views:
        key = tuple(render_text(r, view) for r in records)
        if key not in seen:
            seen.add(key)
            kept.append(view)
    return kept


def fit_lexical(split: Split, scheme: Scheme, *, views=tuple(VIEWS), Cs=CS, class_weights=CLASS_WEIGHTS,
                seed: int = 0) -> LexicalFit:
    """Fit on split.train, choose view, C and class weighting by kappa on split.val.

    Without a validation split the choice is made by grouped 3-fold cross-validation on train.
    """
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise InputError(f"unknown views {unknown}: choose from {', '.join(VIEWS)}")
    y_train = [r.label for r in split.train]
    best: LexicalFit | None = None
    search = []
    for view in distinct_views(split.train, views):
        features = make_features()
        x_train = features.fit_transform([render_text(r, view) for r in split.train])
        x_val = features.transform([render_text(r, view) for r in split.val]) if split.val else None
        for C in Cs:
            for weight in class_weights:
                clf = make_classifier(C, weight, seed)
                if split.val:
                    score = kappa([r.label for r in split.val], clf.fit(x_train, y_train).predict(x_val), scheme.classes)
                else:
                    cv = GroupKFold(n_splits=3)
                    pred = cross_val_predict(clf, x_train, y_train, groups=[r.prompt_group for r in split.train], cv=cv)
                    score = kappa(y_train, pred, scheme.classes)
                search.append({"view": view, "C": C, "class_weight": weight, "val_kappa": round(score, 4)})
                if best is None or score > best.val_kappa:
                    best = LexicalFit(Pipeline([("features", features), ("clf", clf)]), view, C, weight, score)
    if not split.val:  # the chosen classifier was only cross-validated: fit it on all of train
        best.pipeline.named_steps["clf"].fit(best.pipeline.named_steps["features"].transform(
            [render_text(r, best.view) for r in split.train]), y_train)
    best.search = search
    return best


def train_lexical(split: Split, scheme: Scheme, out_dir: str | Path, **search) -> dict:
    """Fit (see `fit_lexical`), save the pipeline with skops into out_dir; return what judge.json records."""
    started = time.perf_counter()
    fit = fit_lexical(split, scheme, **search)
    seconds = time.perf_counter() - started
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_estimator(fit.pipeline, out / MODEL_FILE)
    return {"model_file": MODEL_FILE, **fit.info(), "train_seconds": round(seconds, 2)}
