"""judge: distil an expensive online safety judge (GPT-4o) into a cheap offline one.

    from judge import Judge, read_records
    judge = Judge.load("runs/demo")
    predictions = judge.predict(read_records("responses.jsonl").records)
"""

__version__ = "0.1.0"

from judge.errors import InputError  # noqa: E402
from judge.model import Judge, Prediction  # noqa: E402
from judge.records import Dataset, Record, read_records  # noqa: E402
from judge.schemes import Scheme, load_scheme  # noqa: E402

__all__ = ["Dataset", "InputError", "Judge", "Prediction", "Record", "Scheme", "load_scheme", "read_records"]
