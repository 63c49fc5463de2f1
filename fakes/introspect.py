"""A fake OAuth 2.0 token introspection endpoint (RFC 7662), for backends that check bearer
tokens themselves, such as Dovecot's oauth2 passdb (``introspection_mode = post``).

    with Introspection({"tok-carol": "carol"}) as idp:
        idp.url            # "http://127.0.0.1:PORT/introspect"

A token is looked up however the client sends it: ``token=`` in a form POST (RFC 7662
§2.1), ``token=`` in the query string, after the URL's last ``/`` (Dovecot's ``get`` mode
appends it), or as ``Authorization: Bearer`` (Dovecot's ``auth`` mode). A known token
answers ``{"active": true, "username": ..., "sub": ..., "email": ...}``; an unknown one
``{"active": false}`` (RFC 7662 §2.2). The standard library's threaded HTTP server serves
it: one endpoint on loopback needs nothing more. Tokens are never logged; ``requests``
keeps (mode, whether the token was known) per request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

PATH = "/introspect"


class Introspection:
    """The endpoint; ``tokens`` maps a bearer token to its user name."""

    def __init__(self, tokens: Mapping[str, str] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, domain: str = "example.com") -> None:
        self.tokens: dict[str, str] = dict(tokens or {})
        self.domain = domain
        self.requests: list[tuple[str, bool]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{PATH}"

    def claims(self, token: str | None) -> dict[str, Any]:
        """The RFC 7662 answer for a token."""
        user = self.tokens.get(token) if token else None
        if user is None:
            return {"active": False}
        email = user if "@" in user else f"{user}@{self.domain}"
        return {"active": True, "username": user, "sub": user, "email": email,
                "token_type": "Bearer", "scope": "mail"}

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="introspect",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, mode: str, token: str | None) -> dict[str, Any]:
        answer = self.claims(token)
        with self._lock:
            self.requests.append((mode, answer["active"]))
        return answer


def _token(handler: BaseHTTPRequestHandler, body: bytes) -> tuple[str, str | None]:
    """(mode, token) from wherever this request carries it."""
    auth = handler.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return "auth", auth[7:].strip()
    if body:
        form = parse_qs(body.decode("latin-1"))
        if "token" in form:
            return "post", form["token"][0]
    parts = urlsplit(handler.path)
    query = parse_qs(parts.query)
    if "token" in query:
        return "get", query["token"][0]
    tail = parts.path[len(PATH):].lstrip("/") if parts.path.startswith(PATH) else ""
    if not tail and parts.query and "=" not in parts.query:
        tail = parts.query  # a URL ending in "?access_token=" style without a name
    return "get", unquote(tail) or None


def _handler(endpoint: Introspection) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            mode, token = _token(self, body)
            data = json.dumps(endpoint._record(mode, token)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: a request line may carry a token (get mode)."""

    return Handler
