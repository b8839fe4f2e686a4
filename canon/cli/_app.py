"""What every command shares: the context object, output, and error mapping."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from canon._limits import clip
from canon.errors import CanonError

__all__ = [
    "App",
    "CanonGroup",
    "canon_command",
    "common_options",
    "emit",
    "pass_app",
    "zoo_option",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """Options shared by all commands, carried on ``ctx.obj``."""

    json: bool = False
    quiet: bool = False
    device: str = "auto"
    zoo: str | None = None
    trust_code: bool = False

    @property
    def progress(self) -> bool:
        """Whether to draw progress bars: on a terminal, unless quiet or printing JSON."""
        return not (self.quiet or self.json) and sys.stderr.isatty()

    def log(self, message: str) -> None:
        """A line for the user on stderr (silent with --quiet)."""
        if not self.quiet:
            click.echo(message, err=True)


pass_app = click.make_pass_decorator(App, ensure=True)


class CanonGroup(click.Group):
    """The ``canon`` group: usage errors print one line, like every other error.

    Exit codes: 0 on success, 1 for bad input or a failed operation, 2 for a
    command line that does not parse (click's convention for usage errors).
    """

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            message = clip(" ".join(exc.format_message().split()), _MAX_ERROR)
            click.echo(f"Error: {message}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# Exception types the CLI reports as one-line errors (exit code 1); anything else is a bug,
# also reported in one line (the traceback with CANON_DEBUG=1).
_USER_ERRORS: tuple[type[BaseException], ...] = (CanonError, OSError, MemoryError)
_MAX_ERROR = 360


def _set(field: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        setattr(ctx.ensure_object(App), field, value)

    return callback


def common_options(func: F) -> F:
    """The options every command takes: --json, --quiet, --device."""
    func = click.option(
        "--device",
        default="auto",
        show_default=True,
        expose_value=False,
        callback=_set("device"),
        help="auto, cpu, cuda or cuda:N.",
    )(func)
    func = click.option(
        "--trust-code",
        is_flag=True,
        envvar="CANON_TRUST_CODE",
        expose_value=False,
        callback=_set("trust_code"),
        help="Let files and zoos name module:function architectures (runs their code).",
    )(func)
    func = click.option(
        "--quiet",
        "-q",
        is_flag=True,
        expose_value=False,
        callback=_set("quiet"),
        help="No progress bars or log lines.",
    )(func)
    func = click.option(
        "--json",
        "as_json",
        is_flag=True,
        expose_value=False,
        callback=_set("json"),
        help="Print one JSON object on stdout.",
    )(func)
    return func


def zoo_option(func: F) -> F:
    """The ``--zoo PATH`` option (else ``$CANON_ZOO``, else ``./zoo``)."""
    return click.option(
        "--zoo",
        envvar="CANON_ZOO",
        default="zoo",
        show_default=True,
        expose_value=False,
        callback=_set("zoo"),
        help="The zoo folder (else $CANON_ZOO, else ./zoo).",
    )(func)


def canon_command(func: F) -> F:
    """Turn canon's own errors into one-line click errors with exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except click.ClickException as exc:
            if type(exc) is not click.ClickException:  # usage errors print their own way
                raise
            raise click.ClickException(clip(" ".join(exc.message.split()), _MAX_ERROR)) from exc
        except (click.exceptions.Exit, click.Abort):
            raise
        except _USER_ERRORS as exc:
            raise click.ClickException(_one_line(exc)) from exc
        except Exception as exc:
            if os.environ.get("CANON_DEBUG"):
                raise
            raise click.ClickException(
                f"internal error ({type(exc).__name__}: {_one_line(exc)}); please report it "
                "with the command; CANON_DEBUG=1 shows the traceback"
            ) from exc

    return wrapper  # type: ignore[return-value]


def _one_line(exc: BaseException) -> str:
    """The exception's message as one clipped line (no control characters reach the terminal)."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, CanonError):
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = str(exc).strip() or type(exc).__name__
    return clip(" ".join(text.split()), _MAX_ERROR)


def emit(app: App, payload: dict[str, Any], human: Callable[[], str]) -> None:
    """Print one JSON object with --json, else the human-readable text."""
    if app.json:
        click.echo(json.dumps(payload, indent=2, sort_keys=False))
    else:
        click.echo(human())
