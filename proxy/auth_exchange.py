"""One login's conversation with the auth_http server, sans-IO (ngx_mail_auth_http_module).

The driver asks request() for the bytes of each request, sends them, feeds the reply's bytes
to receive_data() (receive_eof() at an early EOF) and carries out the decision that comes
back:

* Proceed: log in to this backend with these credentials;
* Retry: a WAIT; send the request again after `delay` seconds (0: at once);
* Fail: a failed Auth-Status; `line` goes to the client now (wait 0, then the connection
  closes) or after `wait` seconds (then the dialogue goes on, or with `retry` the request is
  sent again: the reply also said WAIT);
* InternalError: the client gets the protocol's internal-error line; `log` is nginx's
  error-level line ("" where nginx logs nothing).

The machine owns nginx's rules around the reply: the Auth-User/Auth-Pass rewrites, the
password forgotten once a salt was sent, the sticky WAIT flag (s->auth_wait, cleared only
after a sleep) and the bound Postern puts on WAIT repeats without Auth-Wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from postern.proxy.auth_http import (
    RESPONSE_LIMIT,
    AuthRequest,
    AuthResponse,
    AuthServerError,
    build_request,
    is_host_name,
    parse_response,
    peer_text,
)

# A WAIT without Auth-Wait: nginx repeats the request at once, forever. The first repeats go
# out at once as nginx's do; after that one a second, and never for longer than `timeout`.
WAIT_REPEATS_AT_ONCE = 10
WAIT_REPEAT_PACE = 1.0


@dataclass(frozen=True)
class Proceed:
    addr: str
    port: int
    login: bytes
    password: bytes | None
    host_name: bool = False  # addr is a name to resolve (auth_http_server_names)


@dataclass(frozen=True)
class Retry:
    delay: float


@dataclass(frozen=True)
class Fail:
    line: bytes
    status: bytes  # the Auth-Status text, for "client login failed"
    wait: int
    retry: bool = False


@dataclass(frozen=True)
class InternalError:
    log: str


Decision = Proceed | Retry | Fail | InternalError


class AuthExchange:
    """The auth requests of one login attempt, until a decision ends them.

    `creds` is the dialogue's Credentials (rewritten in place, as nginx rewrites the
    session's login and passwd); `failure_line(resp)` is the dialogue's auth_failure.
    """

    def __init__(self, auth_http, extra_headers, protocol, machine, client_ip: str,
                 proxy_protocol: tuple[str, int, str, int] | None, timeout: float,
                 server_names: bool = False) -> None:
        self.auth_http = auth_http
        self.extra_headers = extra_headers
        self.protocol = protocol
        self.machine = machine
        self.creds = machine.creds
        self.client_ip = client_ip
        self.proxy_protocol = proxy_protocol
        self.timeout = timeout  # the server's `timeout`: the bound on paced WAIT repeats
        self.server_names = server_names  # auth_http_server_names: Auth-Server may be a name
        self.peer = peer_text(auth_http)
        self.auth_wait = False  # nginx's s->auth_wait
        self.response: AuthResponse | None = None  # the last reply decoded, for debug lines
        self._reply = b""
        self._repeats = 0  # WAIT repeats without a delay, in a row
        self._waited = 0.0  # time spent pacing them

    def request(self, ssl_headers: list[tuple[str, bytes]] | None = None) -> bytes:
        """The next request, from the credentials as they are now."""
        creds = self.creds
        req = AuthRequest(method=creds.method, user=creds.login, password=creds.password,
                          protocol=self.protocol.name, attempt=creds.attempt,
                          client_ip=self.client_ip, salt=creds.salt,
                          proxy_protocol=self.proxy_protocol)
        extra = self.protocol.auth_request_extra
        if extra is not None:
            extra(self.machine, req)
        if ssl_headers:
            req.ssl_headers = ssl_headers
        data = build_request(self.auth_http, self.extra_headers, req)
        if creds.method in ("apop", "cram-md5") and creds.salt:
            creds.password = None  # nginx forgets it once the salt is sent
        self._reply = b""
        self.response = None
        return data

    def receive_data(self, chunk: bytes) -> Decision | None:
        """Reply bytes in; a decision once the header block is whole, else None."""
        self._reply = (self._reply + chunk)[:RESPONSE_LIMIT]
        try:
            resp = parse_response(self._reply, self.peer)
        except AuthServerError as err:
            return InternalError(str(err))
        if resp is None:
            if len(self._reply) >= RESPONSE_LIMIT:
                return InternalError("")  # nginx's next recv() into a full buffer returns 0
            return None
        self.response = resp
        return self._decide(resp)

    def receive_eof(self) -> Decision:
        """The auth server closed before the reply was whole: nginx gives up silently."""
        return InternalError("")

    def _decide(self, resp: AuthResponse) -> Decision:
        creds = self.creds
        if resp.user is not None:
            creds.login = resp.user
        if resp.password is not None:
            creds.password = resp.password
        if resp.wait_status:
            self.auth_wait = True
        line = self.machine.auth_failure(resp) if resp.error is not None else None
        if line is not None:
            retry = resp.wait > 0 and self.auth_wait
            if retry:
                self.auth_wait = False
            return Fail(line, resp.error, resp.wait, retry)
        if self.auth_wait:
            if resp.wait:
                self._repeats = 0
                self.auth_wait = False
                return Retry(resp.wait)
            self._repeats += 1
            if self._repeats <= WAIT_REPEATS_AT_ONCE:
                return Retry(0)
            if self._waited >= self.timeout:
                return InternalError(f"auth http server {self.peer} kept answering WAIT "
                                     "without Auth-Wait")
            self._waited += WAIT_REPEAT_PACE
            return Retry(WAIT_REPEAT_PACE)
        try:
            addr, port = resp.backend(self.peer, self.server_names)
        except AuthServerError as err:
            return InternalError(str(err))
        if creds.password is None and self.protocol.password_required:
            return InternalError(f"auth http server {self.peer} did not send password")
        return Proceed(addr, port, creds.login, creds.password,
                       host_name=self.server_names and is_host_name(addr.encode()))
