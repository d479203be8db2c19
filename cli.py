"""`python cli.py ...` from a checkout runs the same CLI as the installed `judge` command (judge/cli.py)."""

from judge.cli import app

if __name__ == "__main__":
    app()
