"""A small keep-alive HTTP/1.1 client on `http.client` (the standard library has no pooled one).

Errors: a request that gets no response raises `OSError` or `http.client.HTTPException`; any
response, whatever its status, is returned.
"""

import http.client
import json
import os
import socket
import ssl
import threading
import urllib.parse
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Set, Tuple

# Default: 10 s to open a TCP (and TLS) connection.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
# Default: 8 idle connections kept per origin.
DEFAULT_MAX_IDLE = 8

_Origin = Tuple[str, str]  # (scheme, host[:port])


class SessionClosed(ConnectionError):
    """The session was closed before or during the request."""


class Response(NamedTuple):
    status: int
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON; None for an empty body. Raises ValueError on bad JSON."""
        return json.loads(self.body) if self.body.strip() else None


class HttpSession:
    """Keep-alive connections, reused across requests and threads.

    Thread-safe: each request holds one connection for itself; idle ones are pooled per origin.
    `close()` fails later requests with `SessionClosed` and unblocks requests in flight (their
    sockets are shut down), which is how a long-poll is cut short at shutdown.
    """

    def __init__(
        self,
        headers: Mapping[str, str],
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        max_idle: int = DEFAULT_MAX_IDLE,
    ) -> None:
        self._headers = dict(headers)
        self._connect_timeout_s = connect_timeout_s
        self._max_idle = max_idle
        self._lock = threading.Lock()
        # Guarded by _lock.
        self._idle: Dict[_Origin, List[http.client.HTTPConnection]] = {}
        self._busy: Set[http.client.HTTPConnection] = set()
        self._closed = False

    def request(
        self,
        method: str,
        url: str,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout_s: float = 30.0,
    ) -> Response:
        """Sends one request and reads the whole response; `timeout_s` bounds each socket wait.

        A reused connection the server has meanwhile closed is replaced once, transparently.
        """
        parts = urllib.parse.urlsplit(url)
        origin = (parts.scheme, parts.netloc)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        all_headers = {**self._headers, **(headers or {})}
        while True:
            conn, reused = self._checkout(origin)
            try:
                if conn.sock is None:
                    conn.connect()
                conn.sock.settimeout(timeout_s)
                conn.request(method, target, body=body, headers=all_headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as err:
                self._release(origin, conn, keep=False)
                if self._closed:
                    raise SessionClosed("HTTP session closed") from err
                if reused and not isinstance(err, TimeoutError):
                    continue  # A stale keep-alive connection: retry on a new one.
                raise
            self._release(origin, conn, keep=not response.will_close)
            return Response(response.status, data)

    def close(self) -> None:
        """Closes idle connections and shuts down those in use. Idempotent."""
        with self._lock:
            self._closed = True
            idle = [conn for conns in self._idle.values() for conn in conns]
            self._idle.clear()
            busy = list(self._busy)
        for conn in idle:
            conn.close()
        for conn in busy:
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _checkout(self, origin: _Origin) -> Tuple[http.client.HTTPConnection, bool]:
        """Returns (connection, whether it was used before), marked busy."""
        with self._lock:
            if self._closed:
                raise SessionClosed("HTTP session closed")
            pool = self._idle.get(origin)
            conn = pool.pop() if pool else None
            reused = conn is not None
            if conn is None:
                conn = self._new_connection(origin)
            self._busy.add(conn)
        return conn, reused

    def _release(self, origin: _Origin, conn: http.client.HTTPConnection, keep: bool) -> None:
        with self._lock:
            self._busy.discard(conn)
            pool = self._idle.setdefault(origin, [])
            if keep and not self._closed and len(pool) < self._max_idle:
                pool.append(conn)
                return
        conn.close()

    def _new_connection(self, origin: _Origin) -> http.client.HTTPConnection:
        scheme, netloc = origin
        if scheme == "https":
            # Verified against the system's CAs, or GANTRY_CA_FILE's (a private CA).
            ca = os.environ.get("GANTRY_CA_FILE") or None
            context = ssl.create_default_context(cafile=ca)
            if ca:  # what the operator names is trusted as it is, a server's own certificate too
                context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
            name = os.environ.get("GANTRY_TLS_SERVER_NAME")
            if name:
                return _NamedHTTPSConnection(netloc, name, timeout=self._connect_timeout_s,
                                             context=context)
            return http.client.HTTPSConnection(netloc, timeout=self._connect_timeout_s,
                                               context=context)
        if scheme == "http":
            return http.client.HTTPConnection(netloc, timeout=self._connect_timeout_s)
        raise ValueError(f"unsupported URL scheme {scheme!r}")


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection whose certificate is checked against `server_name` rather than the
    host it dials: a worker in a network namespace of its own dials the server at its node's
    gateway address, while the server's certificate names the server as the agent reaches it
    (the agent sets GANTRY_TLS_SERVER_NAME then)."""

    def __init__(self, netloc: str, server_name: str, **kwargs: Any) -> None:
        super().__init__(netloc, **kwargs)
        self._server_name = server_name

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self._server_name)
