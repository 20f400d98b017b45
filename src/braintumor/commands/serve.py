"""``braintumor serve``: the web page, in one process, on this machine by default."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

NAME = "serve"
HELP = "Start the web page: upload MRI, watch progress, view, correct, measure, download."


def default_data_dir() -> Path:
    """Where jobs live unless ``--data-dir`` says otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "braintumor" / "web"


def _positive(kind: type) -> Callable[[str], float]:
    """An argparse ``type`` that takes a number above 0 (``int`` or ``float``)."""
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            word = "whole number" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"{text!r} is not a {word}") from None
        if not (value > 0 and math.isfinite(value)):  # also refuses nan and inf
            raise argparse.ArgumentTypeError(f"{text} is not a number above 0")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (f"{HELP} Needs the [web] extra: pip install 'braintumor[web]' "
                          "(scripts/install.sh installs it).")
    parser.epilog = ("Access token: with BRAINTUMOR_TOKEN set in the environment, every "
                     "request needs it (Authorization: Bearer TOKEN, or open the printed "
                     "?token= link once, which sets a cookie); without it, anyone who can "
                     "reach --host can use the page.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help=f"folder for the job database and files (default "
                             f"{default_data_dir()})")
    parser.add_argument("--workers", type=_positive(int), default=1, metavar="N",
                        help="jobs run at the same time (default 1)")
    parser.add_argument("--threads", type=_positive(int), default=None, metavar="N",
                        help="CPU threads each job may use (default: all)")
    parser.add_argument("--ttl-hours", type=_positive(float), default=24.0, metavar="H",
                        help="hours inputs and results are kept after a job finishes "
                             "(default 24)")
    parser.add_argument("--max-upload-mb", type=_positive(float), default=1024.0,
                        metavar="MB",
                        help="largest upload in MiB (default 1024)")
    parser.add_argument("--job-timeout-min", type=_positive(float), default=None,
                        metavar="M",
                        help="stop a job running longer than this (default: no limit)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="another name (NAME or NAME:PORT) the page may be opened by, "
                             "such as a reverse proxy's public name; repeatable. Without "
                             "it, only --host, localhost and this machine's names are "
                             "answered, unless --host listens on every address")


#: --host values that listen on every address of the machine
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def served_hosts(host: str, extra: list[str] | None = None) -> list[str] | None:
    """The names a request may give in its ``Host`` header: ``host`` itself, the loopback
    names, this machine's names and ``extra``; None (any name) when ``host`` listens on
    every address, where the machine's addresses are not known in advance. A web page on
    a name rebound to this machine's address (DNS rebinding) is refused otherwise."""
    import socket

    if host in WILDCARD_HOSTS:
        return None
    from braintumor.web.app import host_name

    names = {host, "localhost", "127.0.0.1", "::1", *(host_name(e) for e in extra or [])}
    for name in (socket.gethostname, socket.getfqdn):
        try:
            names.add(name())
        except OSError:
            pass
    return sorted(n.lower().rstrip(".") for n in names if n)


def _cannot_listen(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (one sentence), or None; a host
    that is no address here is a user mistake (:class:`InputError`). Binds a socket the
    way uvicorn will (address reuse on) and lets it go at once."""
    import errno
    import socket

    from braintumor.errors import InputError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        with socket.create_server(address[:2], family=family):
            return None
    except socket.gaierror as exc:
        raise InputError(f"--host {host}: not an address of this machine ({exc.strerror}).") \
            from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (f"port {port} on {host} is already in use (another server?); stop it or "
                    "give another --port.")
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InputError(f"--host {host}: not an address of this machine.") from None
        if exc.errno == errno.EACCES:
            return f"port {port} needs administrator rights here; give --port 1024 or above."
        return f"cannot listen on {host}:{port} ({exc.strerror})."


#: seconds a stop waits for requests under way (uploads end at once: StoppingServer), so
#: that with the workers' own stop it stays within 10 s
GRACEFUL_STOP_S = 5


def _stopping_server() -> type:
    import uvicorn

    class StoppingServer(uvicorn.Server):
        """uvicorn's server, which also tells the app (``app.state.stopping``) when it is
        asked to stop, so uploads still streaming in are answered at once (503) rather
        than holding up the stop."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            stopping = getattr(getattr(self.config.app, "state", None), "stopping", None)
            if stopping is not None:
                stopping.set()
            super().handle_exit(sig, frame)

    return StoppingServer


#: modules of the ``[web]`` extra that ``serve`` cannot start without (python_multipart:
#: every upload reads its form with it)
WEB_MODULES = ("fastapi", "uvicorn", "python_multipart")


def check_web_extra() -> None:
    """One sentence (:class:`InputError`, status 2) when the ``[web]`` extra is not
    installed, rather than an import's traceback."""
    import importlib.util

    from braintumor.errors import InputError

    missing = [m for m in WEB_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"the web page needs braintumor's [web] extra, which is not installed "
                         f"here (no {' or '.join(missing)}): pip install 'braintumor[web]', or "
                         "run scripts/install.sh, which installs it.")


def run(args: argparse.Namespace) -> int:
    from braintumor.commands import output_folder
    from braintumor.errors import InputError

    if not 1 <= args.port <= 65535:
        raise InputError(f"--port {args.port} is not a port number (1-65535).")
    check_web_extra()
    import uvicorn

    from braintumor.web.app import TOKEN_ENV, create_app
    from braintumor.web.store import claim_data_dir

    # the job database and files are written here: a folder it cannot make or write is
    # one sentence with status 1, as predict's output folder is
    data_dir = output_folder(args.data_dir or default_data_dir(), "data folder",
                             "the job database and files")
    probe = data_dir / f".write-test-{os.getpid()}"
    try:  # what os.access does not see (a server's root squashed on NFS)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OSError(exc.errno, f"the data folder is not writable ({exc.strerror})",
                      str(data_dir)) from None
    # one sentence if another server holds it; held from here on (the app takes it over),
    # so a server started at the same moment cannot take it in between
    held = claim_data_dir(data_dir.resolve())
    problem = _cannot_listen(args.host, args.port)
    if problem:  # said before the link is printed, not as uvicorn's log line after it
        if held is not None:
            held.close()
        print(f"error: {problem}", file=sys.stderr)
        return 1
    token = os.environ.get(TOKEN_ENV) or ""
    if args.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"warning: listening on {args.host} with no access token; set {TOKEN_ENV} to "
              "require one.")
    app = create_app(
        data_dir, token=token, max_upload_bytes=int(args.max_upload_mb * 2**20),
        ttl_s=args.ttl_hours * 3600.0, workers=args.workers, threads=args.threads,
        job_timeout_s=args.job_timeout_min * 60 if args.job_timeout_min else None,
        hosts=served_hosts(args.host, args.allow_host), proxies=args.allow_host,
        data_lock=held,
    )
    shown = "127.0.0.1" if args.host in WILDCARD_HOSTS else args.host
    link = f"http://{shown}:{args.port}/" + ("?token=" + token if token else "")
    print(f"braintumor web page: {link}  (data in {data_dir}; Ctrl+C stops)")
    # a stalled upload must not hold up a stop for ever (a service manager would kill it)
    server = _stopping_server()(uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_STOP_S))
    server.run()
    return 0 if server.started else 1
