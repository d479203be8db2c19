"""`python -m judge ...` is the `judge` command."""

from judge.cli import app

app(prog_name="judge")
