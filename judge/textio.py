"""Bytes from users' files into text and JSON, with reasons a person can act on.

Every reader (JSONL, CSV, whole-file JSON) decodes through here, so a file in the wrong encoding,
a binary file, a line nested thousands deep or a lone surrogate escape is reported as one line
naming the file and line, never as a decoding traceback from deep inside the standard library.
`check_writable` does the same for the paths a command will write, before any work is done.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from pathlib import Path

from judge.errors import InputError

# A JSONL line (or CSV field) longer than this is not one response record: it is read no further.
MAX_LINE_BYTES = 16 << 20
UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def decode(raw: bytes, *, first: bool = False) -> str:
    """UTF-8 text of one line (a UTF-8 byte-order mark is dropped from the first); ValueError otherwise."""
    try:
        return raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(decoding_problem(raw, exc.start)) from None


def decoding_problem(raw: bytes, offset: int) -> str:
    if raw.startswith(UTF16_BOMS):
        return "UTF-16 text: convert the file to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 FILE > FILE.utf8)"
    column = offset - raw.rfind(b"\n", 0, offset)
    return f"not UTF-8 text (byte 0x{raw[offset]:02x} at column {column}): save the file as UTF-8"


class JsonProblem(ValueError):
    """Why a text is not usable JSON, and the line of the text where that shows (1 when unknown)."""

    def __init__(self, message: str, line: int = 1):
        super().__init__(message)
        self.line = line


def loads(text: str) -> object:
    """One JSON document, or JsonProblem saying what is wrong with it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonProblem(f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except RecursionError:
        raise JsonProblem("JSON nested too deeply to be a response record") from None
    if "\\u" in text:  # only escapes can smuggle in a lone surrogate, which no UTF-8 writer accepts later
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise JsonProblem("holds a lone surrogate escape (like \\ud800): not valid Unicode text") from None
    return value


def read_json_file(path: str | Path) -> object:
    """A whole-file JSON document (VLSBench outputs, MM-SafetyBench answers, prompt files)."""
    text = read_text_file(path)
    try:
        return loads(text)
    except JsonProblem as exc:
        raise InputError(str(exc), path=path, line=exc.line) from None


def read_text_file(path: str | Path) -> str:
    """A whole text file (CSV, JSON), decoded as UTF-8 with the failing line named."""
    raw = read_bytes(path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(decoding_problem(raw, exc.start), path=path, line=raw.count(b"\n", 0, exc.start) + 1) from None


def read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=path) from None


def iter_lines(path: str | Path):
    """(line number, text or ValueError) for every non-blank line, never holding more than one
    over-long line's first MAX_LINE_BYTES in memory."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=path) from None
    with handle:
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                yield number, ValueError(f"line longer than {MAX_LINE_BYTES:,} bytes: not one response record")
                continue
            if not raw.strip():
                continue
            try:
                yield number, decode(raw, first=number == 1)
            except ValueError as exc:
                yield number, exc


def check_writable(path: str | Path, *, folder: bool = False) -> Path:
    """Refuse, before any work is done, an output path (a file, or with ``folder`` a folder) that cannot be
    written: a folder where a file goes or a file where a folder goes, a parent that is a file, a place no
    file can be created in. Creates nothing that stays: missing parent folders are fine if they could be made."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise InputError("is a file, not a folder to write into", path=path)
    if not folder and path.is_dir():
        raise InputError("is a folder: give a file path to write", path=path)
    if path.is_file() and not os.access(path, os.W_OK):
        raise InputError("cannot write: the file is read-only", path=path)
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot write: {existing} is not a folder", path=path)
    try:  # the permission bits do not say it all (root, read-only mounts, /proc): create a file and drop it
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".judge-write-check-"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write: no file can be created in {existing} ({exc.strerror or exc})", path=path) from None
    return path
