"""Running the app under uvicorn: a clear error for a taken port, and a graceful stop on SIGTERM."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp


def run_server(app: ASGIApp, host: str, port: int, access_log: bool = False) -> None:
    """Serve until SIGTERM or Ctrl+C, then stop gracefully: in-flight requests finish, exit status 0.

    Call check_can_listen first (the CLI does, before loading the model) for a one-line error on a taken port.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, access_log=access_log, lifespan="on", log_level="info")
    with _signals_ignored_after_shutdown():
        uvicorn.Server(config).run()


def check_can_listen(host: str, port: int) -> None:
    """Fail on a taken port or a foreign address now, as one line, rather than in uvicorn's log with exit status 3.

    Binds as uvicorn will (SO_REUSEADDR, so a port in TIME_WAIT is not taken) and lets go again.

    Raises:
        OSError: the address cannot be resolved or bound, naming host and port.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror or error}") from error


@contextmanager
def _signals_ignored_after_shutdown() -> Iterator[None]:
    """uvicorn re-raises the signal it stopped on once it is done; a graceful stop is not a failure.

    uvicorn installs its own handlers while serving and restores the ones it found
    before re-raising: ignoring the signals here makes that re-raise a no-op.
    """
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
