"""``tac8 serve``: the status page and ``metrics.json`` over HTTP, read-only.

``tac8 serve [--bind 127.0.0.1] [--port 8780]``. Three paths, each naming a file fixed at start
(``routes``): ``/`` and ``/status.html`` (the page the metrics program renders beside
``metrics.json``) and ``/metrics.json``. Nothing of a request ever becomes a path on disk: no
other file can be asked for and there is no listing. GET and HEAD only (any other method is
405); every answer forbids caching, content sniffing, framing, scripts and anything loaded from
elsewhere (``SECURITY_HEADERS``). No authentication: keep the default loopback address, or
bind another knowingly (the page shows titles, agents' output and cost). It writes nothing;
supervisord can keep it running (conf/supervisord.conf).
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from services.cli.common import UserError
from shared.config import Config, load_config

DEFAULT_BIND, DEFAULT_PORT = "127.0.0.1", 8780
HTML, JSON = "text/html; charset=utf-8", "application/json; charset=utf-8"
SECURITY_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    ("Referrer-Policy", "no-referrer"),
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def routes(cfg: Config) -> dict[str, tuple[Path, str]]:
    """URL path → (the file served, its content type)."""
    page = (cfg.status_page, HTML)
    return {"/": page, "/status.html": page, "/metrics.json": (cfg.paths.metrics, JSON)}


class Handler(BaseHTTPRequestHandler):
    """Answers from ``ROUTES`` (set per server by ``handler_for``)."""

    ROUTES: dict[str, tuple[Path, str]] = {}
    timeout = 15  # seconds a connection may sit idle: each holds a thread

    def version_string(self) -> str:
        return "tac8"  # the Server header: no Python version for anyone to look up

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # The base class calls do_<METHOD>: every method but GET and HEAD is not allowed
        # (instead of its 501 for a method it does not know).
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._plain(405, "only GET and HEAD\n", allow="GET, HEAD")

    def _answer(self, with_body: bool) -> None:
        route = self.ROUTES.get(urlsplit(self.path).path)  # a query string is ignored
        if route is None:
            self._plain(404, "not found: this server has /, /status.html and /metrics.json\n",
                        with_body=with_body)
            return
        path, content_type = route
        try:
            data = path.read_bytes()  # written atomically: all of one version
        except FileNotFoundError:
            self._plain(503, f"{path.name} is not written yet: is the metrics program running?\n",
                        with_body=with_body)
            return
        self._send(200, content_type, data, with_body)

    def _plain(self, code: int, text: str, with_body: bool = True, **headers: str) -> None:
        self._send(code, "text/plain; charset=utf-8", text.encode(), with_body, **headers)

    def _send(self, code: int, content_type: str, data: bytes, with_body: bool,
              **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name.title(), value)
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def end_headers(self) -> None:
        # every answer, the base class's own errors (a malformed request) included
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        super().end_headers()

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        # a page reloading itself every few seconds is not news; failures are
        if isinstance(code, int) and code >= 400:
            super().log_request(code, size)


def handler_for(cfg: Config) -> type[Handler]:
    return type("ConfiguredHandler", (Handler,), {"ROUTES": routes(cfg)})


def listen(cfg: Config, bind: str, port: int) -> ThreadingHTTPServer:
    """The server, listening; a port taken or an address that cannot be bound is a
    ``UserError`` saying so in one line."""
    try:
        return ThreadingHTTPServer((bind, port), handler_for(cfg))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"cannot listen on {bind}:{port}: the port is taken "
                            "(another tac8 serve? choose another with --port)") from None
        raise UserError(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bind", default=DEFAULT_BIND, metavar="ADDRESS",
                   help=f"address to listen on (default {DEFAULT_BIND}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT}; 0: any free port)")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def command(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    server = listen(cfg, args.bind, args.port)
    host, port = server.server_address[:2]
    print(f"serving the status page at http://{host}:{port}/ (and /metrics.json) from "
          f"{cfg.status_page.parent}; Ctrl-C to stop", flush=True)
    if args.bind not in LOOPBACK:
        print(f"note: anyone who can reach {args.bind}:{port} can read it (no authentication)",
              file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # supervisord's stop: end as Ctrl-C does
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
