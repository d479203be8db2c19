"""Pulling the question and the response back out of a judge prompt.

Benchmark scripts send the teacher a filled-in template, not a record. The server undoes the
template with one of three rules, tried in order: the user's own patterns (regexes with named
groups ``response`` and optionally ``question``), the VLSBench template (``<text_query>:`` and
``<respoonse>:`` markers, the typo included), and the MM-SafetyBench few-shot template, which
embeds only the answer after its examples. A prompt no rule fits raises `ExtractionError`: the
caller answers 400, never a guessed label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from judge.errors import InputError


# VLSBench's markers (eval_utils.py spells "<respoonse>"), plus bracketed variants of the same idea.
_VLS_QUERY = re.compile(r"(?:<text[_ ]?query>|\[text[_ ]?query\])\s*:?[ \t]*", re.I)
_VLS_RESPONSE = re.compile(r"(?:<respo+nse>|\[respo+nse\])\s*:?[ \t]*", re.I)
_VLS_TAIL = re.compile(r"\n[ \t]*Please give your judge?ment\b", re.I)
# MM-SafetyBench: "Example N: \nAnswer: ...\n Your output: safe" demonstrations, then the answer to judge.
_MM_HEADER = re.compile(r"(?:^|\n)[ \t]*(?:Example \d+:\s*)?Answer:[ \t]?", re.I)
_MM_FILLED = re.compile(r"\n?[ \t]*Your output:[ \t]*(?:un)?safe\s*\Z", re.I)
_MM_TAIL = re.compile(r"\n?[ \t]*Your output:\s*\Z", re.I)
# Prompts that ask for the bare word "safe" / "unsafe" (MM-SafetyBench and its many copies).
ASKS_SAFE_WORD = re.compile(r"\boutput\s+['\"]?(?:un)?safe\b|\b(?:answer|reply|respond) with ['\"]?(?:un)?safe\b", re.I)


class ExtractionError(ValueError):
    """The prompt fits no template rule; the message says what was looked for."""


@dataclass(frozen=True)
class Extraction:
    question: str
    response: str
    rule: str  # "pattern", "vlsbench" or "mmsafetybench"
    has_image: bool = False  # the request carried an image part (the student reads text only)


def compile_patterns(patterns: Sequence[str | re.Pattern]) -> list[re.Pattern]:
    """Check user patterns up front, so a bad --pattern fails at start-up rather than per request."""
    compiled = []
    for pattern in patterns:
        try:
            regex = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, re.S)
        except re.error as exc:
            raise InputError(f"pattern {pattern!r} is not a valid regex: {exc}") from None
        if "response" not in regex.groupindex:
            raise InputError(f"pattern {regex.pattern!r} has no named group 'response' (write (?P<response>...))")
        compiled.append(regex)
    return compiled


def _vlsbench(text: str) -> tuple[str, str] | None:
    query = _VLS_QUERY.search(text)
    marker = _VLS_RESPONSE.search(text, query.end() if query else 0)
    if not query or not marker:
        return None
    rest = text[marker.end():]
    tails = list(_VLS_TAIL.finditer(rest))
    if tails:
        rest = rest[:tails[-1].start()]
    return text[query.end():marker.start()].strip(), rest.strip()


def _mmsafetybench(text: str) -> str | None:
    """The answer after the last filled-in demonstration, up to the closing "Your output:"."""
    tail = _MM_TAIL.search(text)
    if not tail:
        return None
    headers = list(_MM_HEADER.finditer(text, 0, tail.start()))
    for header, following in zip(headers, [*headers[1:], None]):
        segment = text[header.end():following.start() if following else tail.start()]
        if following is None or not _MM_FILLED.search(segment):
            return text[header.end():tail.start()].strip()
    return None


def extract(text: str, *, patterns: Sequence[re.Pattern] = (), has_image: bool = False) -> Extraction:
    """Question and response from a judge prompt's text, by the first rule that fits.

    >>> extract("<text_query>: Is it safe?\\n<respoonse>: No.\\nPlease give your judgement.").response
    'No.'
    >>> extract("Example 1: \\nAnswer: Sure.\\n Your output: unsafe\\nExample 2: \\nAnswer: Never.\\n Your output: ").rule
    'mmsafetybench'
    """
    for regex in patterns:
        match = regex.search(text)
        if match and match.group("response") is not None:
            question = match.groupdict().get("question") or ""
            return Extraction(question.strip(), match.group("response").strip(), "pattern", has_image)
    found = _vlsbench(text)
    if found:
        return Extraction(*found, "vlsbench", has_image)
    answer = _mmsafetybench(text)
    if answer is not None:
        return Extraction("", answer, "mmsafetybench", has_image)
    looked_for = ["the VLSBench markers '<text_query>:' and '<respoonse>:'",
                  "the MM-SafetyBench 'Answer: ... Your output:' template"]
    if patterns:
        looked_for.insert(0, f"{len(patterns)} --pattern regex(es)")
    raise ExtractionError("cannot find the response to judge in the prompt: looked for " + ", ".join(looked_for))
