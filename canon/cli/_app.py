"""What every command shares: the context object, output, and error mapping."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from canon._limits import clip
from canon.errors import CanonError

__all__ = ["App", "CanonGroup", "command", "emit", "one_line_errors", "pass_app"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """Options shared by all commands, carried on ``ctx.obj``."""

    json: bool = False
    quiet: bool = False
    device: str = "auto"
    zoo: str | None = None
    trust_code: bool = False
    progress_mode: str = "auto"

    @property
    def progress_style(self) -> str | None:
        """How long work reports progress on stderr: ``bar`` (a redrawn bar), ``plain``
        (a line now and then) or None. ``auto``: a bar on a terminal, else lines (a log
        file, CI, a notebook's pipe); no bar with --json; nothing with --quiet."""
        if self.quiet or self.progress_mode == "none":
            return None
        if self.progress_mode in ("bar", "plain"):
            return self.progress_mode
        return "bar" if sys.stderr.isatty() and not self.json else "plain"

    @property
    def progress(self) -> bool:
        """Whether redrawn progress bars are on (the Hub client's bars follow this)."""
        return self.progress_style == "bar"

    def log(self, message: str) -> None:
        """A line for the user on stderr (silent with --quiet)."""
        if not self.quiet:
            click.echo(message, err=True)


pass_app = click.make_pass_decorator(App, ensure=True)


class CanonGroup(click.Group):
    """The ``canon`` group: every error of every command becomes one line (usage errors too).

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

    def invoke(self, ctx: click.Context) -> Any:
        with one_line_errors():
            return super().invoke(ctx)


# Exception types the CLI reports as one-line errors (exit code 1); anything else is a bug,
# also reported in one line (the traceback with CANON_DEBUG=1).
_USER_ERRORS: tuple[type[BaseException], ...] = (CanonError, OSError, MemoryError)
_MAX_ERROR = 360


def _app_option(field: str, *decls: str, **attrs: Any) -> Callable[[F], F]:
    """An option that sets ``App.<field>`` (on ``ctx.obj``) instead of reaching the command."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        setattr(ctx.ensure_object(App), field, value)

    return click.option(*decls, expose_value=False, callback=callback, **attrs)


#: The options every command takes, as they are listed in its help.
_COMMON_OPTIONS = (
    _app_option("json", "--json", "as_json", is_flag=True, help="Print one JSON object on stdout."),
    _app_option("quiet", "--quiet", "-q", is_flag=True, help="No progress bars or log lines."),
    _app_option(
        "trust_code",
        "--trust-code",
        is_flag=True,
        envvar="CANON_TRUST_CODE",
        help="Let files and zoos name module:function architectures (runs their code).",
    ),
    _app_option(
        "device", "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."
    ),
    _app_option(
        "progress_mode",
        "--progress",
        type=click.Choice(["auto", "bar", "plain", "none"]),
        default="auto",
        show_default=True,
        envvar="CANON_PROGRESS",
        help="Progress on stderr: a bar on a terminal and plain lines elsewhere (auto), "
        "or always bar, plain or none.",
    ),
)


def common_options(func: F) -> F:
    """The options every command takes: --json, --quiet, --trust-code, --device, --progress."""
    for option in reversed(_COMMON_OPTIONS):
        func = option(func)
    return func


def zoo_option(func: F) -> F:
    """The ``--zoo PATH`` option (else ``$CANON_ZOO``, else ``./zoo``)."""
    return _app_option(
        "zoo",
        "--zoo",
        envvar="CANON_ZOO",
        default="zoo",
        show_default=True,
        help="The zoo folder (else $CANON_ZOO, else ./zoo).",
    )(func)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn every error into a one-line click error with exit code 1 (click's own usage
    errors keep their code 2 and are printed in one line by :class:`CanonGroup`)."""
    try:
        yield
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


def command(
    name: str | None = None,
    *,
    group: click.Group | None = None,
    zoo: bool = True,
    **attrs: Any,
) -> Callable[[Callable[..., Any]], click.Command]:
    """Make a canon command: the :class:`App` passed first, and after the command's own
    options the shared ones (``--json``, ``--quiet``, ``--device``, ``--trust-code``, and
    ``--zoo`` unless ``zoo=False``). Registered on ``group`` when given; the group maps
    errors to one line (:class:`CanonGroup`)."""

    def decorate(func: Callable[..., Any]) -> click.Command:
        def carrier() -> None: ...

        shared = common_options(carrier)
        if zoo:
            shared = zoo_option(shared)
        func = pass_app(func)
        own = getattr(func, "__click_params__", [])
        func.__click_params__ = [*shared.__click_params__, *own]  # type: ignore[attr-defined]
        make = group.command if group is not None else click.command
        return make(name, **attrs)(func)

    return decorate


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
