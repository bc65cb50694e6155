"""How every command ends: one line and exit 2 for what the user must fix, the resume hint after a stop.

The commands build a configuration inside `guard()`, run it inside `guard()`, and
turn the result into an exit code. A UserError anywhere below (a refusal, a bad
option, an unreadable manifest) reaches the user as one `backfill: error: …`
line, never as a traceback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shlex
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import anyio
import typer

from backfill.errors import StopRun, UserError, first_error
from backfill.interrupts import watching
from backfill.manifest import manifest_error

T = TypeVar("T")
A = TypeVar("A")


def fail(message: str) -> typer.Exit:
    """Print `backfill: error: MESSAGE` on stderr; raise the returned Exit (code 2)."""
    typer.echo(f"backfill: error: {message}", err=True)
    return typer.Exit(2)


@contextlib.contextmanager
def before_anything() -> Iterator[None]:
    """A command's set-up, before it reads or writes anything (options, the engine's lazy imports).

    typer turns a KeyboardInterrupt into exit 130 without a word; a Ctrl-C here says what it stopped,
    as backfill.entry does for one during the first imports.
    """
    try:
        with watching():  # a Ctrl-C inside an import's callback is not lost (backfill/interrupts.py)
            yield
    except KeyboardInterrupt:
        typer.echo("\nstopped before anything started: nothing was read or written", err=True)
        raise typer.Exit(130) from None


def guard(fn: Callable[[], T], manifest: str | None = None, *, resumable: bool = False) -> T:
    """Run `fn`; a UserError (or a failure of the `manifest` file) becomes one line and exit 2.

    `resumable`: a StopRun (the endpoint gone past --outage-timeout, credentials that expired) is
    followed by the command that resumes, as after Ctrl-C.
    """
    try:
        return fn()
    except BaseException as exc:
        err = first_error(exc, StopRun) or first_error(exc, UserError)
        if err is None and manifest is not None:
            err = manifest_error(exc, manifest)
        if err is not None:
            code = fail(str(err))
            if resumable and isinstance(err, StopRun):
                typer.echo(resume_hint(), err=True)
            raise code from None
        raise


def load_event_loop() -> bool:
    """Import uvloop where it is installed (a dependency, except on Windows): called within
    before_anything, so that a Ctrl-C during that import says what it stopped."""
    if importlib.util.find_spec("uvloop") is None:
        return False
    import uvloop  # noqa: F401

    return True


def run_async(fn: Callable[[A], Awaitable[T]], arg: A) -> T:
    """`fn(arg)` on an event loop of its own: uvloop's where it is installed."""
    return anyio.run(fn, arg, backend_options={"use_uvloop": load_event_loop()})


def resume_hint() -> str:
    """The line a stopped run ends with: the very command that was run, to run again."""
    return f"stopped. To resume, run: {shlex.join(['backfill', *sys.argv[1:]])}"
