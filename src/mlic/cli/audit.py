"""``mlic audit DATA``, ``mlic audit review AUDIT``, ``mlic audit apply AUDIT OUT``: find, fix missing labels.

``mlic audit DATA`` takes every training option of ``mlic train`` (generated
from ``TrainConfig``, less the data options the audit sets itself); the folds
train with them.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from mlic.cli.common import (
    AsJson,
    DataArg,
    DropUnannotated,
    Format,
    ImagesRoot,
    Separator,
    option_parameter,
    run,
    source_options,
)
from mlic.training.config import OPTIONS

AUDIT_OWNED = ("data", "val_data", "out", "format", "images_root", "tag_separator", "drop_unannotated",
               "demo_train", "demo_val", "hide_positives", "hidden_as")  # fmt: skip
"""``mlic.auditing.folds.AUDIT_OWNED``, repeated so that ``mlic --help`` imports no torch (a test checks)."""
SUBCOMMANDS = ("run", "review", "apply")


class DefaultRun(TyperGroup):
    """``mlic audit DATA ...`` means ``mlic audit run DATA ...``; ``review`` and ``apply`` are subcommands."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in SUBCOMMANDS and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=DefaultRun,
    no_args_is_help=True,
    help="Find likely missing and wrong labels: mlic audit DATA, then review and apply.",
)


def audit_data(ctx: typer.Context, **values: Any) -> None:
    """Train K models on K folds, score every image out of sample, and rank likely missing and wrong labels.

    Writes AUDIT/suggestions.jsonl (the review file, best first), AUDIT/labels.csv (per label) and
    AUDIT/review.html; run it again on the same --out to continue after a kill.
    """
    from mlic.auditing import audit

    own = ("data", "out", "folds", "features", "min_confidence", "max_suggestions", "page_limit", "as_json")
    mine = {k: values.pop(k) for k in own}
    options = source_options(mine["data"], values.pop("format"), values.pop("images_root"),
                             values.pop("tag_separator"), values.pop("drop_unannotated"))  # fmt: skip
    training = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            convert = OPTIONS[name].metadata["cli"]
            training[name] = run(convert, value) if convert is not None else value
    summary = run(
        audit, mine["data"], mine["out"], folds=mine["folds"], features=mine["features"],
        min_confidence=mine["min_confidence"], max_suggestions=mine["max_suggestions"] or None,
        page_limit=mine["page_limit"], source_options=options, verbose=not mine["as_json"],
        seed=training.pop("seed", 0), **training,
    )  # fmt: skip
    if mine["as_json"]:
        typer.echo(json.dumps(summary))


_OWN = [
    inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
    inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=DataArg),
    *(inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, d, a in (
        ("out", Path("audit"), Annotated[Path, typer.Option(help="The audit folder (continued if it holds "
                                                            "this audit already).")]),
        ("folds", 5, Annotated[int, typer.Option(help="K models, each scoring the fold it never saw.")]),
        ("features", False, Annotated[bool, typer.Option(
            help="Cheap mode: embed once with a frozen backbone (--weights FILE or --pretrained), then K "
            "linear heads instead of K trainings.")]),
        ("min_confidence", 0.5, Annotated[float, typer.Option(help="Keep suggestions at least this "
                                                              "confident (0-1].")]),
        ("max_suggestions", 10_000, Annotated[int, typer.Option(help="At most this many of each kind "
                                                                "(0: no cap).")]),
        ("page_limit", 2_000, Annotated[int, typer.Option(help="Suggestions shown on the review page.")]),
        ("format", None, Format), ("images_root", None, ImagesRoot), ("tag_separator", " ", Separator),
        ("drop_unannotated", False, DropUnannotated), ("as_json", False, AsJson),
    )),
    *(option_parameter(name, "Training: ") for name in OPTIONS if name not in AUDIT_OWNED),
]  # fmt: skip
audit_data.__signature__ = inspect.Signature(_OWN)
audit_data.__annotations__ = {p.name: p.annotation for p in _OWN}
app.command("run")(audit_data)


@app.command("review")
def review(
    audit_dir: Annotated[Path, typer.Argument(help="The folder mlic audit wrote.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in a browser.")
    ] = False,
) -> None:
    """Serve the review page; each accept (a) or reject (r) is saved at once to AUDIT/decisions.json."""
    from mlic.auditing import review_server

    server = run(review_server, audit_dir, port=port)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    typer.echo(f"review at {url} (decisions go to {audit_dir / 'decisions.json'}); Ctrl+C ends")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@app.command("apply")
def apply(
    audit_dir: Annotated[Path, typer.Argument(help="The folder mlic audit wrote.")],
    out: Annotated[Path, typer.Argument(help="The new data file (JSON lines) to write.")],
    decisions: Annotated[
        Path | None, typer.Option(help="Decisions file (default AUDIT/decisions.json).")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    as_json: AsJson = False,
) -> None:
    """Write a new data file with exactly the accepted suggestions applied; the audited data is left alone."""
    from mlic.auditing import apply_decisions

    result = run(apply_decisions, audit_dir, out, decisions=decisions, overwrite=overwrite)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"wrote {result['data']}: {result['added']} labels added, {result['removed']} removed "
                   f"({result['rejected']} rejected, {result['undecided']} undecided)")  # fmt: skip
