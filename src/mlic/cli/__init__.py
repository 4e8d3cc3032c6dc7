"""The ``mlic`` command: a thin typer layer that parses options and calls one library function each.

One module per command (typer's "one file per command"): ``train`` (its
options generated from ``TrainConfig``), ``evaluate`` (``evaluate``,
``calibrate``), ``predict``, ``explain``, ``export``, ``serve``, ``data`` (``data inspect``,
``data split``); ``common`` holds the shared options and error handling. Each
command imports the library only when it runs, so ``mlic --help`` is quick.
"""

from __future__ import annotations

import typer

from mlic.cli import audit, data, evaluate, explain, export, predict, serve, train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Multi-label image classification: train, evaluate, predict.",
)
app.command()(train.train)
app.command()(evaluate.evaluate)
app.command()(evaluate.calibrate)
app.command()(predict.predict)
app.command()(explain.explain)
app.command()(export.export)
app.command()(serve.serve)
app.add_typer(data.app, name="data")
app.add_typer(audit.app, name="audit")


def main() -> None:  # pragma: no cover - console script entry
    """Run the ``mlic`` command."""
    app()


__all__ = ["app", "main"]
