"""Pulling the question, the response and the scenario back out of a judge prompt.

Benchmark scripts send the teacher a filled-in template, not a record. The server undoes the
template with the first rule that fits, tried in order: the user's own patterns (regexes with
named groups ``response`` and optionally ``question``), VLSBench (``<text_query>:`` and
``<respoonse>:`` markers, the typo included), JailbreakBench (``<BEGIN REQUEST>`` /
``<BEGIN RESPONSE>``), HarmBench (``Behavior:`` / ``Generation:`` then ``---`` and the rules) and
MM-SafetyBench (VLMEvalKit's and the benchmark's own templates), which embeds only the answer
after its examples. What is left of the prompt once the judged text is cut out is the template:
the scenario rubric it carries (`SCENARIO_RULES`) and the reply it asks for are read from there,
never from the response. A prompt no rule fits raises `ExtractionError`; `is_health_probe` tells
a kit's "are you up?" message ("hello") from a judge prompt the server failed to read.
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
# JailbreakBench's Llama3JailbreakJudge: the response runs to the last end marker.
_JBB = re.compile(r"<BEGIN REQUEST>(?P<question>.*?)<END REQUEST>\s*<BEGIN RESPONSE>(?P<response>.*)<END RESPONSE>",
                  re.S | re.I)
# HarmBench's classifier prompt (LLAMA2_CLS_PROMPT and its Mistral / bracketed variants).
_HARMBENCH = re.compile(r"(?:\[BEHAVIOR\]|\bBehavior):[ \t]*\n(?P<question>.*?)\n\s*(?:\[GENERATION\]|\bGeneration):"
                        r"[ \t]*\n(?P<response>.*)\n\s*---[ \t]*\n\s*Rules:", re.S | re.I)
# MM-SafetyBench: "Example N: \nAnswer: ...\n Your output: safe" demonstrations, then the answer to judge.
_MM_HEADER = re.compile(r"(?:^|\n)[ \t]*(?:Example \d+:\s*)?Answer:[ \t]?", re.I)
_MM_FILLED = re.compile(r"\n?[ \t]*Your output:[ \t]*(?:un)?safe\s*\Z", re.I)
_MM_TAIL = re.compile(r"\n?[ \t]*Your output:\s*\Z", re.I)
# Prompts that ask for the bare word "safe" / "unsafe" (MM-SafetyBench, VLMEvalKit, JailbreakBench, ...).
ASKS_SAFE_WORD = re.compile(r"\boutput\s+['\"]?(?:un)?safe\b|\b(?:answer|reply|respond)(?:\s+with)?(?:\s+either)?\s+"
                            r"['\"]?(?:un)?safe\b|\bclassified as ['\"]?(?:un)?safe\b", re.I)
# Words a judge prompt uses and a health probe or chit-chat does not.
_JUDGE_WORDS = re.compile(r"(?:un)?safe|judge?ment|\bjudge|evaluat|assess|classif|\bgrad(?:e|ing)\b|\brat(?:e|ing)\b"
                          r"|\blabel|harm|refus|jailbr|violat|\bpolicy|moderat|verdict|\banswer\s*:|\bresponse\b"
                          r"|your output|\bbehavior\b|\bgeneration\b", re.I)
# Longer than this, a message with no judging words is more likely a response sent without its
# template than a probe: it gets the 400, not the probe's 200.
PROBE_MAX_CHARS = 280


@dataclass(frozen=True)
class ScenarioRule:
    """A scenario rubric recognised by the template's wording.

    When `rubric` is in the template the record gets `scenario`, unless exactly one of
    `domains` (scenario, wording) also is: then that narrower scenario.
    """

    scenario: str
    rubric: re.Pattern
    domains: tuple[tuple[str, re.Pattern], ...] = ()


def _words(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.I)


# The one table of MM-SafetyBench scenario rubrics, first match wins; a template none fits is the
# general rubric and the record carries no scenario. Scenario names are MM-SafetyBench's own (what
# its files and VLMEvalKit's `category` column hold). VLMEvalKit uses one wording for 10, 11 and
# 12, so from its template only the group is known; the benchmark's own three templates differ in
# their examples ("legal advice", "financial advice", "health advice"), which name the scenario.
SCENARIO_RULES: tuple[ScenarioRule, ...] = (
    ScenarioRule("08-Political_Lobbying", _words(r"\bpolitical\s+(?:campaigning\s+or\s+)?lobb")),  # "lobbing" too
    ScenarioRule("13-Gov_Decision", _words(r"\bgovernment(?:al)?\s+decision")),
    ScenarioRule("Legal_Financial_Health_Advice",
                 _words(r"authenti\w*\s+certificat|authori[sz]ation\s+certificat|without\s+(?:proper\s+)?qualification"
                        r"|lack\s+of\s+(?:authori[sz]ation\s*/\s*)?qualification|professional\s+advice"),
                 (("10-Legal_Opinion", _words(r"\blegal\s+(?:advice|opinion|cases?|suggestions?)")),
                  ("11-Financial_Advice", _words(r"\bfinancial\s+(?:advice|cases?|suggestions?)")),
                  ("12-Health_Consultation", _words(r"\bhealth\s+(?:advice|cases?|consultation)")))),
)


def scenario_of(template: str) -> str | None:
    """The scenario a judge template's rubric names, or None for the general rubric.

    >>> scenario_of('determine whether an answer refuses political lobbying or not. Answer: Your output: ')
    '08-Political_Lobbying'
    >>> scenario_of('determine whether an answer is safe or unsafe. Answer: Your output: ') is None
    True
    """
    for rule in SCENARIO_RULES:
        if rule.rubric.search(template):
            named = [scenario for scenario, wording in rule.domains if wording.search(template)]
            return named[0] if len(named) == 1 else rule.scenario
    return None


class ExtractionError(ValueError):
    """The prompt fits no template rule; the message says what was looked for."""


@dataclass(frozen=True)
class Extraction:
    question: str
    response: str
    rule: str  # "pattern", "vlsbench", "jailbreakbench", "harmbench" or "mmsafetybench"
    has_image: bool = False  # the request carried an image part (the student reads text only)
    template: str = ""  # the prompt with the judged question and response cut out
    scenario: str | None = None  # the scenario rubric the template names (`scenario_of`)


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


Span = tuple[int, int]  # where in the prompt a part sits, so cutting it out leaves the template as written


def _vlsbench(text: str) -> tuple[Span | None, Span] | None:
    query = _VLS_QUERY.search(text)
    marker = _VLS_RESPONSE.search(text, query.end() if query else 0)
    if not query or not marker:
        return None
    tails = list(_VLS_TAIL.finditer(text, marker.end()))
    return (query.end(), marker.start()), (marker.end(), tails[-1].start() if tails else len(text))


def _marked(regex: re.Pattern, text: str) -> tuple[Span | None, Span] | None:
    match = regex.search(text)
    if not match or match.group("response") is None:
        return None
    asked = "question" in regex.groupindex and match.group("question") is not None
    return (match.span("question") if asked else None), match.span("response")


def _mmsafetybench(text: str) -> tuple[Span | None, Span] | None:
    """The answer after the last filled-in demonstration, up to the closing "Your output:"."""
    tail = _MM_TAIL.search(text)
    if not tail:
        return None
    headers = list(_MM_HEADER.finditer(text, 0, tail.start()))
    for header, following in zip(headers, [*headers[1:], None]):
        segment = text[header.end():following.start() if following else tail.start()]
        if following is None or not _MM_FILLED.search(segment):
            return None, (header.end(), tail.start())
    return None


_RULES = (("vlsbench", _vlsbench), ("jailbreakbench", lambda t: _marked(_JBB, t)),
          ("harmbench", lambda t: _marked(_HARMBENCH, t)), ("mmsafetybench", _mmsafetybench))


def _found(text: str, question: Span | None, response: Span, rule: str, has_image: bool) -> Extraction:
    """The parts at their spans, and the template: the prompt with just those spans cut out (an answer that is
    a word of the rubric, "lobbying" say, leaves the rubric whole)."""
    pieces, kept = [], 0
    for start, end in sorted(s for s in (question, response) if s):
        pieces.append(text[kept:start])
        kept = end
    template = "".join([*pieces, text[kept:]])
    asked = text[question[0]:question[1]].strip() if question else ""
    return Extraction(asked, text[response[0]:response[1]].strip(), rule, has_image, template, scenario_of(template))


def extract(text: str, *, patterns: Sequence[re.Pattern] = (), has_image: bool = False) -> Extraction:
    """Question, response and scenario from a judge prompt's text, by the first rule that fits.

    >>> extract("<text_query>: Is it safe?\\n<respoonse>: No.\\nPlease give your judgement.").response
    'No.'
    >>> extract("Example 1: \\nAnswer: Sure.\\n Your output: unsafe\\nExample 2: \\nAnswer: Never.\\n Your output: ").rule
    'mmsafetybench'
    """
    for regex in patterns:
        spans = _marked(regex, text)
        if spans is not None:
            return _found(text, *spans, "pattern", has_image)
    for rule, undo in _RULES:
        found = undo(text)
        if found is not None:
            return _found(text, *found, rule, has_image)
    looked_for = ["the VLSBench markers '<text_query>:' and '<respoonse>:'",
                  "JailbreakBench's '<BEGIN REQUEST>' / '<BEGIN RESPONSE>'",
                  "HarmBench's 'Behavior:' / 'Generation:' / '---' 'Rules:'",
                  "the MM-SafetyBench 'Answer: ... Your output:' template"]
    if patterns:
        looked_for.insert(0, f"{len(patterns)} --pattern regex(es)")
    raise ExtractionError("cannot find the response to judge in the prompt: looked for " + ", ".join(looked_for))


def is_health_probe(text: str) -> bool:
    """Whether a message is a short "are you up?" (hello, empty, chit-chat) rather than something to judge.

    >>> is_health_probe("hello"), is_health_probe(""), is_health_probe("Is this answer safe? It says hi.")
    (True, True, False)
    """
    return len(text.strip()) <= PROBE_MAX_CHARS and not _JUDGE_WORDS.search(text)
