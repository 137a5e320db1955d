"""`import paddle` without its side effects on the process: the SIGTERM
handler it takes over, and the warning it prints.

Paddle's first import runs `paddle.base.__bootstrap__`, whose
`core.init_glog(...)` calls glog's `InstallFailureSignalHandler()`: it
replaces the handlers of SIGSEGV, SIGILL, SIGFPE, SIGABRT, SIGBUS and
SIGTERM, process-wide, from whichever thread imports. The crash signals may
keep glog's handler (it prints the C++ stack of a crash). SIGTERM is no crash:
it is how supervisors ask a process to stop, and the program around posepipe
(uvicorn in `posepipe serve`, gunicorn, Ray, a user's own code) handles it;
glog's handler instead prints "FatalError: Termination signal is detected"
and kills the process, dropping whatever it was doing.

posepipe imports paddle lazily, often on a worker thread after such a handler
is in place (the server loads its models after it starts listening), so every
import of paddle in posepipe goes through `import_paddle()`, which puts the
SIGTERM disposition in force before the import back right after it. It does so
with sigaction(2) directly: Python's signal.signal works only on the main
thread, and the C-level handler Python had installed is restored exactly.

The same import warns "No ccache found" on every machine without ccache (it
is about compiling C++ extensions, which posepipe never does); that warning is
filtered while paddle is first imported, and only that one."""
from __future__ import annotations

import ctypes
import signal
import sys
import threading
import warnings
from types import ModuleType
from typing import Optional

# Larger than struct sigaction on every libc (glibc x86_64: 152 bytes, macOS: 16).
_SIGACTION_BYTES = 1024
# One import at a time: a second thread must not save glog's handler as "the one before".
_import_lock = threading.Lock()


def import_paddle() -> ModuleType:
    """The paddle module (ImportError as `import paddle` raises it), with the
    process's SIGTERM handler as it was before paddle was first imported."""
    with _import_lock:
        if "paddle" in sys.modules:
            return sys.modules["paddle"]
        saved = _save_sigterm()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
                import paddle
        finally:
            if saved is not None:
                _restore_sigterm(saved)
    return paddle


def _libc() -> Optional[ctypes.CDLL]:
    if sys.platform == "win32" or not hasattr(signal, "SIGTERM"):
        return None  # glog installs no signal handlers on Windows
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.sigaction  # noqa: B018 - present on every POSIX libc
    except (OSError, AttributeError):
        return None
    return libc


def _save_sigterm() -> Optional[ctypes.Array]:
    libc = _libc()
    if libc is None:
        return None
    saved = ctypes.create_string_buffer(_SIGACTION_BYTES)
    if libc.sigaction(int(signal.SIGTERM), None, saved) != 0:
        return None
    return saved


def _restore_sigterm(saved: ctypes.Array) -> None:
    libc = _libc()
    if libc is not None:
        libc.sigaction(int(signal.SIGTERM), saved, None)
