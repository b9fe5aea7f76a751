"""Run a command-line program for one pset, from inside a worker.

::

    def worker(pset):
        return psmpi.run_command(["simulate", "--a", "{a}", "--out", "out-{a}.txt"], pset)

Each argument is filled in with :meth:`str.format` from the pset (``{a}``, ``{a:.3f}``;
``{{`` is a literal brace). No shell is involved: a value with spaces or quotes stays
one argument.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import PsetError, PsmpiError

MAX_OUTPUT = 2000
"""Characters of stdout and of stderr kept in the returned dict by default."""
_KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a timed-out process group


class CommandError(PsmpiError, RuntimeError):
    """A program could not be started, exited non-zero (``check=True``) or timed out.

    Inside a worker it fails the pset, whose ``_exception`` then holds this message.
    ``returncode``, ``stdout`` and ``stderr`` are attributes (None if it never ran).
    """

    def __init__(self, message: str, returncode: int | None = None,
                 stdout: str | None = None, stderr: str | None = None):
        super().__init__(message)
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def format_args(args: str | Sequence[Any], pset: Mapping[str, Any]) -> list[str]:
    """The argument list, each argument filled in with ``str.format(**pset)``.

    A str is split like a shell would (:func:`shlex.split`) before it is filled in.

    >>> format_args("prog --a {a} --name '{name}'", {"a": 0.5, "name": "x y"})
    ['prog', '--a', '0.5', '--name', 'x y']
    """
    if isinstance(args, str):
        args = shlex.split(args)
    elif not isinstance(args, Sequence) or not args:
        raise PsetError(f"run_command: args must be a non-empty list of arguments or a "
                        f"command string, not {args!r}")
    out = []
    for arg in args:
        try:
            out.append(str(arg).format_map(pset) if isinstance(arg, str) else os.fspath(arg)
                       if isinstance(arg, os.PathLike) else str(arg))
        except KeyError as exc:
            raise PsetError(f"run_command: argument {arg!r} uses {{{exc.args[0]}}}, which the "
                            f"pset {dict(pset)} lacks; write {{{{ and }}}} for literal "
                            "braces") from None
        except (ValueError, IndexError, AttributeError) as exc:
            raise PsetError(f"run_command: cannot fill in argument {arg!r} from the pset: "
                            f"{exc}; write {{{{ and }}}} for literal braces") from None
    return out


def _shorten(text: str, limit: int | None) -> str:
    """Keep the head and the tail: the start says what ran, the end what went wrong."""
    if limit is None or len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[-tail:]}"


def _default_signals() -> None:
    """In the child before exec: psmpi's worker processes ignore SIGTERM, SIGINT and SIGUSR1
    (the driver decides when to stop) and exec keeps ignored signals ignored; the program
    must get the default actions back, or a timeout's SIGTERM would not stop it."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


def _start(argv: list[str], cwd: str | None, env: dict | None) -> subprocess.Popen:
    if cwd is not None and not os.path.isdir(cwd):
        raise CommandError(f"cannot run {argv[0]!r}: the working directory {cwd!r} does not "
                           "exist; create it first")
    try:
        # a session of its own, so a timeout can kill the program's children too
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", start_new_session=True,
                                preexec_fn=_default_signals)
    except FileNotFoundError:
        if os.sep in argv[0]:
            where = "relative to " + os.path.abspath(cwd or ".")
        else:
            where = "on PATH=" + (os.environ if env is None else env).get("PATH", "")
        raise CommandError(f"program {argv[0]!r} not found {where}; install it, fix its name, "
                           "or give its full path") from None
    except PermissionError:
        raise CommandError(f"program {argv[0]!r} is not executable: chmod +x it") from None
    except OSError as exc:
        raise CommandError(f"cannot run {argv[0]!r}: {exc}") from None


def _kill_group(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM the program's process group, SIGKILL it after a grace period; its output."""
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE), (signal.SIGKILL, _KILL_GRACE)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    # a child that left the group still holds the pipes: give up on the rest of the output
    proc.kill()
    proc.wait()
    return "", ""


def run_command(args: str | Sequence[Any], pset: Mapping[str, Any] | None = None, *,
                timeout: float | None = None, cwd: str | os.PathLike | None = None,
                check: bool = True, env: Mapping[str, str] | None = None,
                max_output: int | None = MAX_OUTPUT) -> dict:
    """Run a program with arguments filled in from a pset; return what it did.

    Parameters
    ----------
    args : list or str
        The program and its arguments, each formatted with ``str.format(**pset)``
        (``"{a}"``, ``"--x={x:.2f}"``). A str is split like a shell would first. No
        shell runs: pipes and ``$VAR`` need ``["sh", "-c", "..."]``.
    pset : dict, optional
        The values for the placeholders.
    timeout : float, optional
        Seconds; a program still running then is stopped with its whole process group
        (SIGTERM, SIGKILL 5 s later).
    cwd : str or os.PathLike, optional
        Working directory of the program (formatted from the pset too); must exist.
    check : bool
        True (default): a non-zero exit status or a timeout raises :class:`CommandError`
        with the end of stderr, so in a worker the pset fails with that message. False:
        return the dict whatever happened.
    env : dict, optional
        Variables added to this process's environment for the program.
    max_output : int or None
        Keep at most this many characters of stdout and of stderr (the start and the
        end, marked where cut), so long outputs do not bloat the results file. None
        keeps everything (parse it and return only what you need).

    Returns
    -------
    dict
        ``returncode`` (negative: killed by that signal), ``stdout``, ``stderr``,
        ``runtime`` (seconds), ``timed_out`` (bool). Return it from a worker to store it.

    Raises
    ------
    CommandError
        The program is not found (the message names it and the PATH searched), not
        executable, ``cwd`` does not exist, or with ``check``: it failed or timed out.
    PsetError
        An argument uses a key the pset lacks.

    Examples
    --------
    >>> run_command(["echo", "a={a}"], {"a": 3})["stdout"]
    'a=3\\n'
    """
    pset = {} if pset is None else pset
    argv = format_args(args, pset)
    if cwd is not None:
        cwd = os.fspath(cwd).format_map(pset)
    full_env = None if env is None else {**os.environ, **{k: str(v) for k, v in env.items()}}
    t0 = time.monotonic()
    proc = _start(argv, cwd, full_env)
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        stdout, stderr = _kill_group(proc)
    except BaseException:  # interrupted: do not leave the program running
        _kill_group(proc)
        raise
    runtime = time.monotonic() - t0
    result = {"returncode": proc.returncode, "stdout": _shorten(stdout, max_output),
              "stderr": _shorten(stderr, max_output), "runtime": runtime, "timed_out": timed_out}
    if check and (timed_out or proc.returncode != 0):
        what = (f"did not finish within {timeout} s and was killed" if timed_out
                else f"exited with status {proc.returncode}")
        tail = _shorten(stderr.strip() or stdout.strip(), 1000)
        raise CommandError(f"{shlex.join(argv)} {what}" + (f": {tail}" if tail else ""),
                           proc.returncode, result["stdout"], result["stderr"])
    return result
