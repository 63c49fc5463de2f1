"""The directory every zoo server serves, and the correct decision they all start from."""

from __future__ import annotations

import hashlib
import hmac

from .serve import Request

USER = "alice"
PASSWORD = "Open sesame+1%"  # upper case, a space, '+' and '%': what escaping bugs trip on
USERS = {USER: PASSWORD, "bob": "hunter2 hunter2"}
BACKENDS = {"imap": ("127.0.0.1", 143), "pop3": ("127.0.0.1", 110), "smtp": ("127.0.0.1", 25)}
LOCAL_DOMAINS = ("example.com",)


def head(*lines: str, status: str = "HTTP/1.0 200 OK") -> bytes:
    out = ([status] if status else []) + list(lines)
    return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def ok(req: Request, *extra: str, backend: tuple[str, int] | None = None) -> bytes:
    host, port = backend or BACKENDS[req.protocol]
    return head("Auth-Status: OK", f"Auth-Server: {host}", f"Auth-Port: {port}", *extra)


def fail(req: Request, text: str = "Invalid login or password", wait: int | None = 3) -> bytes:
    lines = [f"Auth-Status: {text}"]
    if wait is not None and req.attempt <= 10:  # the docs: stop the wait after 10-20 tries
        lines.append(f"Auth-Wait: {wait}")
    if req.protocol == "smtp":
        lines.append("Auth-Error-Code: 535 5.7.8")
    return head(*lines)


def salt(req: Request) -> bytes:
    return req.h("Auth-Salt").encode()


def digest_ok(req: Request, password: str) -> bool:
    """APOP: md5(salt + password); CRAM-MD5: hmac-md5(password, salt), hex."""
    secret = password.encode()
    if req.method == "apop":
        want = hashlib.md5(salt(req) + secret).hexdigest()
    else:
        want = hmac.new(secret, salt(req), hashlib.md5).hexdigest()
    return hmac.compare_digest(want, req.password)


def relay_allowed(req: Request) -> bool:
    """smtp_auth none: deliver to local recipients only."""
    rcpt = req.h("Auth-SMTP-To").rstrip(">")
    return "@" not in rcpt or rcpt.rpartition("@")[2].lower() in LOCAL_DOMAINS


def credentials_ok(req: Request, user: str | None = None, password: str | None = None) -> bool:
    user = req.user if user is None else user
    known = USERS.get(user)
    if known is None:
        return False
    if req.method == "plain":
        return hmac.compare_digest(known.encode("utf-8", "surrogateescape"),
                                   (req.password if password is None else password)
                                   .encode("utf-8", "surrogateescape"))
    if req.method in ("apop", "cram-md5"):
        return digest_ok(req, known)
    if req.method == "external":
        return req.h("Auth-SSL-Verify") == "SUCCESS"
    return False


def correct(req: Request) -> bytes:
    """What a correct server answers."""
    if req.method == "none":
        return ok(req) if relay_allowed(req) else fail(req, "Relaying denied")
    if not credentials_ok(req):
        return fail(req)
    if req.method in ("apop", "cram-md5"):  # the backend needs the plaintext password
        return ok(req, f"Auth-Pass: {USERS[req.user]}")
    return ok(req)
