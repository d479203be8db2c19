"""Label schemes: the one place that knows which labels a teacher speaks in.

A judge reproduces whatever scheme its teacher used (VLSBench's Refuse / Warning / Unsafe,
MM-SafetyBench's safe / unsafe, or a user's own), so every other module asks a `Scheme`
instead of hard-coding classes. Built-in schemes are TOML files in ``judge/schemes/``; a user's
scheme file (TOML or JSON) has the same shape.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from judge.errors import InputError

BUILTIN_DIR = Path(__file__).parent / "schemes"
BUILTIN_SCHEMES = ("vlsbench", "mmsafetybench")


def _norm(value: object) -> str:
    """Fold case, spaces, underscores and hyphens so 'Safe_with refusal' == 'safe with refusal'."""
    return re.sub(r"[\s_\-]+", " ", str(value).strip().lower())


@dataclass(frozen=True)
class LabelDef:
    name: str
    code: int | None = None
    display: str = ""
    safe: bool = False
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scheme:
    """A label set: names in ordinal order, input aliases, which labels are safe, the headline rate.

    >>> s = load_scheme("vlsbench")
    >>> s.classes
    ('refuse', 'warning', 'unsafe')
    >>> s.parse("Safe with warning"), s.parse(3), s.rate_of(["refuse", "unsafe"])
    ('warning', 'unsafe', 0.5)
    """

    name: str
    labels: tuple[LabelDef, ...]
    rate: str = "safety rate"
    rate_labels: tuple[str, ...] = ()
    _lookup: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.labels) < 2:
            raise ValueError(f"scheme {self.name!r} needs at least two labels")
        for label in self.labels:
            keys = [label.name, label.display, *label.aliases]
            if label.code is not None:
                keys.append(str(label.code))
            for key in filter(None, keys):
                other = self._lookup.setdefault(_norm(key), label.name)
                if other != label.name:
                    raise ValueError(f"scheme {self.name!r}: alias {key!r} names both {other} and {label.name}")
        unknown = set(self.rate_labels) - set(self.classes)
        if unknown:
            raise ValueError(f"scheme {self.name!r}: rate_labels {sorted(unknown)} are not labels")

    @property
    def classes(self) -> tuple[str, ...]:
        """Label names in ordinal order; also the column order of every probability array."""
        return tuple(label.name for label in self.labels)

    @property
    def safe_labels(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels if label.safe)

    @property
    def is_binary(self) -> bool:
        return len(self.labels) == 2

    def label(self, name: str) -> LabelDef:
        return self.labels[self.classes.index(name)]

    def try_parse(self, value: object) -> str | None:
        """The canonical label for a raw value (name, code, display string or alias), or None."""
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\.0*\s*", value):
            value = float(value)  # a code written as "3.0", as the number 3.0 is read
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return self._lookup.get(_norm(value))

    def parse(self, value: object) -> str:
        label = self.try_parse(value)
        if label is None:
            raise ValueError(f"unknown label {value!r} for scheme {self.name!r} (expected one of {', '.join(self.classes)})")
        return label

    def is_safe(self, label: str) -> bool:
        return self.label(label).safe

    def to_binary(self, label: str) -> str:
        """Collapse to the safe / unsafe view every safety rate depends on."""
        return "safe" if self.is_safe(label) else "unsafe"

    def rate_of(self, labels: Sequence[str]) -> float:
        """The headline rate (safety rate, attack success rate, ...) as a fraction."""
        if not labels:
            return float("nan")
        return sum(label in self.rate_labels for label in labels) / len(labels)

    def rate_probability(self, probs):
        """Each row's probability of the headline rate's labels (P(refuse) + P(warning) for the safety rate),
        from an (n, classes) array whose columns are in `classes` order."""
        return probs[:, [self.classes.index(c) for c in self.rate_labels]].sum(axis=1)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "rate": self.rate,
            "rate_labels": list(self.rate_labels),
            "labels": [
                {"name": l.name, "code": l.code, "display": l.display, "safe": l.safe, "aliases": list(l.aliases)}
                for l in self.labels
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Scheme:
        labels = tuple(
            LabelDef(
                name=str(l["name"]),
                code=l.get("code"),
                display=l.get("display") or str(l["name"]),
                safe=bool(l.get("safe", False)),
                aliases=tuple(l.get("aliases", ())),
            )
            for l in data["labels"]
        )
        return cls(
            name=str(data["name"]),
            labels=labels,
            rate=data.get("rate", "safety rate"),
            rate_labels=tuple(data.get("rate_labels") or [l.name for l in labels if l.safe]),
        )


BINARY = Scheme.from_dict(tomllib.loads((BUILTIN_DIR / "mmsafetybench.toml").read_text()))


def load_scheme(name_or_path: str | Path | Scheme) -> Scheme:
    """A built-in scheme by name, or a user's scheme from a TOML or JSON file."""
    if isinstance(name_or_path, Scheme):
        return name_or_path
    if str(name_or_path) in BUILTIN_SCHEMES:
        path = BUILTIN_DIR / f"{name_or_path}.toml"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise InputError(f"no scheme named {name_or_path!r}: use one of {', '.join(BUILTIN_SCHEMES)} or a .toml/.json file")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        return Scheme.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a valid scheme file: {exc}") from None


def builtin_with_classes(classes: Iterable[str]) -> Scheme | None:
    """The built-in scheme whose labels are exactly `classes` (e.g. the keys of a scored file's judge_probs)."""
    wanted = set(classes)
    return next((scheme for scheme in map(load_scheme, BUILTIN_SCHEMES) if set(scheme.classes) == wanted), None)


def detect_scheme(raw_labels: Iterable[tuple[str, int, object]]) -> Scheme:
    """Pick the built-in scheme the labels are written in, or fail naming the lines that disagree.

    ``raw_labels`` holds (file, line, value). Lines that only one scheme accepts decide; when
    two schemes each have such lines the file mixes schemes. When nothing decides (a file labelled
    only "unsafe"), the first built-in (vlsbench) wins. Values no scheme knows are left for the
    per-line check, which names them.
    """
    items = list(raw_labels)
    schemes = [load_scheme(name) for name in BUILTIN_SCHEMES]
    only: dict[str, list] = {}
    for item in items:
        accepting = [s.name for s in schemes if s.try_parse(item[2]) is not None]
        if len(accepting) == 1:
            only.setdefault(accepting[0], []).append(item)
    if len(only) > 1:
        lines = [f"  only {name}: {len(hits)} lines, e.g. " + ", ".join(f"{f}:{n} ({v!r})" for f, n, v in hits[:5])
                 for name, hits in only.items()]
        raise InputError("labels mix schemes (name one with --scheme):\n" + "\n".join(lines))
    name = next(iter(only), BUILTIN_SCHEMES[0])
    return next(s for s in schemes if s.name == name)
