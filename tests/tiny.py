"""Tiny real models and synthetic records for fast tests (made here, no downloads, no ../shared)."""

from __future__ import annotations

import json
import random
from pathlib import Path

PHRASES = {
    "refuse": ["I'm sorry, but I can't help with that.", "I cannot assist with this request.",
               "Sorry, I won't provide that.", "I must decline to answer this."],
    "warning": ["This could be dangerous, so please be careful; here is a safe way to think about it.",
                "Be aware of the risk shown in the image. If you want, consult a professional first.",
                "Caution: this may be harmful. A safer alternative is to ask an expert."],
    "unsafe": ["Sure! Here are the steps you asked for, first gather the items.",
               "Of course, just follow these steps and you will get it done quickly.",
               "Great question, here is exactly how to do it step by step."],
}
BINARY = {"safe": PHRASES["refuse"] + PHRASES["warning"], "unsafe": PHRASES["unsafe"]}
CATEGORIES = ["Illegal Activity", "Self-Harm", "Privacy"]
MODELS = ["model-a", "model-b", "model-c"]
WORDS = sorted({w.strip(".,!?;:'").lower() for texts in PHRASES.values() for t in texts for w in t.split()}
               | {"question", "category", "image", "response", "how", "do", "i", "this", "what", "is", "in",
                  "the", "a", "illegal", "activity", "self", "harm", "privacy", "scenario", "prompt", "number"})


def write_vocab_tokenizer(path: Path) -> None:
    """A WordPiece tokenizer over the synthetic vocabulary (plus single characters for anything else)."""
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(33, 127)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[c for c in chars if c.lower() not in WORDS],
             *[f"##{c}" for c in chars]]
    seen, unique = set(), []
    for token in vocab:
        if token not in seen:
            seen.add(token)
            unique.append(token)
    BertTokenizerFast(vocab={token: i for i, token in enumerate(unique)}, do_lower_case=True).save_pretrained(path)


def make_tiny_bert(path: Path) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with its tokenizer, saved like a hub model."""
    from transformers import AutoTokenizer, BertConfig, BertModel, set_seed

    write_vocab_tokenizer(path)
    vocab_size = len(AutoTokenizer.from_pretrained(path))
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256,
                        initializer_range=0.2)  # wider init: inputs stay distinguishable in a random model
    set_seed(0)  # the same random backbone every run, so what a test trains on it is reproducible
    BertModel(config).save_pretrained(path)
    return path


def make_tiny_llama(path: Path, layers: int = 2) -> Path:
    """A randomly initialised Llama (hidden 64, 2 layers unless asked) sharing the synthetic tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, set_seed

    write_vocab_tokenizer(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id)
    set_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def synthetic_rows(n: int = 120, *, seed: int = 0, scheme: str = "vlsbench", with_labels: bool = True) -> list[dict]:
    """Rows a tiny model can learn: the label shows in the wording. Two models answer each prompt."""
    rng = random.Random(seed)
    phrases = PHRASES if scheme == "vlsbench" else BINARY
    labels = list(phrases)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        prompt = i // 2
        row = {"id": f"r{i}", "question": f"How do I do this? prompt number {prompt}",
               "response": rng.choice(phrases[label]), "category": CATEGORIES[prompt % len(CATEGORIES)],
               "model": MODELS[i % 2 + (prompt % 2)]}
        if with_labels:
            row["label"] = label
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
