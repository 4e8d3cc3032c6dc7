"""``mlic train``: its options are generated from ``TrainConfig``'s declarations, one per option.

Besides the options: ``--config FILE`` reads options from YAML (the command
line overrides it), ``--print-config`` prints the resolved configuration as
YAML and trains nothing, ``--resume RUN`` continues a run and accepts only
the options in ``RESUMABLE``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from mlic.cli.common import fail, option_parameter, run
from mlic.training.config import OPTIONS, RESUMABLE, TrainConfig, read_config_file, to_yaml

GIVEN = ("COMMANDLINE", "ENVIRONMENT")
"""Where an option counts as given (click's ``ParameterSource`` names), so that it overrides ``--config``."""

Resume = Annotated[
    Path | None,
    typer.Option(
        help="Continue an interrupted run directory; only "
        + ", ".join("--" + n for n in ("max-epochs", "devices", "num-nodes", "strategy", "accelerator"))
        + ", --workers, --checkpoint-steps, --checkpoint-minutes and --progress may change.",
        rich_help_panel="Run",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="YAML file of options (as --print-config writes them); the command line overrides it.",
        rich_help_panel="Run",
    ),
]
PrintConfig = Annotated[
    bool,
    typer.Option(
        "--print-config",
        help="Print the resolved configuration as YAML and train nothing.",
        rich_help_panel="Run",
    ),
]


def flag(name: str) -> str:
    """How the command line spells option ``name`` (``--val`` for ``val_data``)."""
    declared = OPTIONS[name].metadata["flag"]
    return declared.split("/")[0] if declared else "--" + name.replace("_", "-")


def train(ctx: typer.Context, **values: Any) -> None:
    """Train a model; prints the path of the artifact it writes.

    A run killed at any point continues with ``--resume RUN`` from its last
    checkpoint; with ``--deterministic`` it then ends with the weights an
    uninterrupted run would have.
    """
    resume, config_file, print_config = values.pop("resume"), values.pop("config"), values.pop("print_config")
    options = run(read_config_file, config_file) if config_file is not None else {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in GIVEN:
            convert = OPTIONS[name].metadata["cli"]
            options[name] = run(convert, value) if convert is not None else value
    if resume is not None:
        _train_resumed(resume, options, print_config)
    else:
        _train_new(run(TrainConfig.from_dict, options), print_config)


def _train_new(config: TrainConfig, print_config: bool) -> None:
    from mlic.training import is_global_zero, resolve
    from mlic.training import train as train_fn

    if print_config:
        typer.echo(to_yaml(run(resolve, config)), nl=False)
        return
    artifact = run(train_fn, config)
    if is_global_zero():  # under DDP every process runs this command; one prints
        typer.echo(str(artifact))


def _train_resumed(run_dir: Path, options: dict, print_config: bool) -> None:
    from mlic.training import is_global_zero, read_run_config, resolve
    from mlic.training import train as train_fn

    fixed = [name for name in options if name not in RESUMABLE]
    if fixed:
        allowed = ", ".join(flag(n) for n in RESUMABLE)
        fail(f"{flag(fixed[0])} cannot change on --resume (the run would not continue the same training); "
             f"only {allowed} may")  # fmt: skip
    if print_config:
        config = run(lambda: read_run_config(run_dir).resumed(options))
        typer.echo(to_yaml(run(resolve, config)), nl=False)
        return
    artifact = run(train_fn, resume=run_dir, **options)
    if is_global_zero():
        typer.echo(str(artifact))


train.__signature__ = inspect.Signature(
    [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        *(option_parameter(name) for name in OPTIONS),
        inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Resume),
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigFile),
        inspect.Parameter(
            "print_config", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=PrintConfig
        ),
    ]
)
train.__annotations__ = {p.name: p.annotation for p in train.__signature__.parameters.values()}
