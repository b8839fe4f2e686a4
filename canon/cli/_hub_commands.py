"""Hub commands: push and pull (options named as ``hf upload`` / ``hf download`` name them)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import click

from canon.cli._app import App, command, emit
from canon.cli._common import open_zoo, zoo_made_if_needed

__all__ = ["pull", "push"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Repo:
    """The Hub repository a command names: REPO_ID, --revision, --token and --repo-type."""

    id: str
    revision: str | None
    token: str | None
    type: str

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`canon.hub.push` and :func:`canon.hub.pull` that
        name the revision, the token and the repository type."""
        return {"revision": self.revision, "token": self.token, "repo_type": self.type}


def _repo_options(func: F) -> F:
    """REPO_ID, --revision, --token and --repo-type, shared by push and pull, given to the
    command as one :class:`Repo` named ``repo``."""

    @functools.wraps(func)
    def run(
        *args: Any,
        repo_id: str,
        revision: str | None,
        token: str | None,
        repo_type: str,
        **kwargs: Any,
    ) -> Any:
        return func(*args, repo=Repo(repo_id, revision, token, repo_type), **kwargs)

    for option in reversed(
        (
            click.argument("repo_id"),
            click.option("--revision", default=None, help="Branch, tag or commit (default main)."),
            click.option(
                "--token",
                envvar="HF_TOKEN",
                default=None,
                help="Hub access token (else $HF_TOKEN, else the saved login).",
            ),
            click.option(
                "--repo-type",
                type=click.Choice(["model", "dataset"]),
                default="model",
                show_default=True,
            ),
        )
    ):
        run = option(run)
    return cast(F, run)


@command()
@_repo_options
@click.option("--private", is_flag=True, default=None, help="Create the repository private.")
@click.option("--commit-message", default=None, help="The commit's summary.")
@click.option(
    "--force",
    is_flag=True,
    help="Push this zoo as it is: overwrite the remote's edits, delete what it lacks.",
)
def push(
    app: App, repo: Repo, private: bool | None, commit_message: str | None, force: bool
) -> None:
    """Push the zoo to Hub repository REPO_ID as one commit (only new objects are uploaded)."""
    from canon.hub import push

    with open_zoo(app) as zoo:
        result = push(
            zoo,
            repo.id,
            private=private,
            commit_message=commit_message,
            force=force,
            progress=app.progress,
            **repo.options(),
        )

    def text() -> str:
        if result.commit is None:
            return f"{repo.id}@{result.revision} is up to date ({result.entries} entries)"
        deleted = f", {result.deleted} deleted" if result.deleted else ""
        return (
            f"pushed {result.entries} entries to {repo.id}@{result.revision} "
            f"({result.uploaded} objects uploaded, {result.kept} already there{deleted}; "
            f"{result.results} cached results)\n{result.url}"
        )

    emit(app, result.to_dict(), text)


@command()
@_repo_options
@click.option("--cache-dir", default=None, help="The Hub cache (default: the Hub client's).")
@click.option("--rename", is_flag=True, help="Add entries whose names clash as NAME-<id>.")
@click.option("--no-results", is_flag=True, help="Skip the cached results; recompute here.")
@click.option(
    "--prefer",
    type=click.Choice(["local", "remote"]),
    default=None,
    help="Settle values both sides changed: keep this zoo's, or take the remote's.",
)
def pull(
    app: App,
    repo: Repo,
    cache_dir: str | None,
    rename: bool,
    no_results: bool,
    prefer: str | None,
) -> None:
    """Merge the zoo at Hub repository REPO_ID into this zoo (created if needed): its new
    entries, and its edits since the two last synced."""
    from canon.hub import pull

    with zoo_made_if_needed(app) as zoo:
        result = pull(
            zoo,
            repo.id,
            cache_dir=cache_dir,
            rename=rename,
            results=not no_results,
            prefer=prefer,
            progress=app.progress,
            **repo.options(),
        )

    def text() -> str:
        at = f"{repo.id}@{result.revision}" + (f" ({result.commit[:12]})" if result.commit else "")
        lines = [
            f"pulled {len(result.added)} new entries from {at}; {result.present} already here, "
            f"{result.downloaded} objects downloaded, {result.results} cached results"
        ]
        lines += [f"  renamed {old} -> {new}" for old, new in result.renamed.items()]
        if result.updated:
            lines.append(f"took the remote's edits of {_listed(result.updated)}")
        if result.removed_there:
            lines.append(
                f"kept {_listed(result.removed_there)}, removed on the remote since the last "
                "sync (canon rm them to follow; a push restores them otherwise)"
            )
        return "\n".join(lines)

    emit(app, result.to_dict(), text)


def _listed(names: list[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
