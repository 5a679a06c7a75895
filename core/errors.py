"""The exception types the command line turns into a one-line message (exit status 2)."""


class InputError(ValueError):
    """Bad input from the user: the message names the problem and the fix."""


class OutputError(InputError):
    """An output that cannot or may not be written: an existing file without permission to replace it, a folder
    that is a file or not writable."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, `kill`, a closing session), raised where it arrives as Ctrl-C's KeyboardInterrupt
    is, so that every command cleans up its outputs the same way for both."""


def stop_on_sigterm() -> None:
    """Turns SIGTERM into `Terminated` in this process (only the main thread may set a signal handler)."""
    import signal
    import threading

    def terminate(signum, frame) -> None:
        raise Terminated()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)


def unknown_fields(dataclass_type, data: dict) -> list[str]:
    """Keys of `data` that are not fields of `dataclass_type`: a configuration from a newer version, or a typo."""
    from dataclasses import fields

    return sorted(set(data) - {f.name for f in fields(dataclass_type)})


def quiet_gdal() -> None:
    """GDAL and PROJ print their own errors ("ERROR 1: PROJ: ...", libtiff's "No space left on device") on stderr
    before the exception the tools turn into one line; they say nothing the line does not. A user who sets
    CPL_LOG (e.g. CPL_LOG=/dev/stderr) still sees them."""
    import os

    os.environ.setdefault("CPL_LOG", os.devnull)
