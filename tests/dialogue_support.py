"""What the unit tests of the three dialogue machines share: one server's settings per
protocol, and a machine driven with bytes until it has no more actions."""

from __future__ import annotations

from postern.proxy.conf.settings import AuthHttp, Listen, ServerSettings
from postern.proxy.dialogue import Authenticate, Close, Log, Send

# auth_http 127.0.0.1:9000/auth
AUTH_HTTP = AuthHttp(text="127.0.0.1:9000/auth", host_header="127.0.0.1", uri="/auth",
                     addr="127.0.0.1", port=9000)


def server_settings(protocol: str, port: int, **extra) -> ServerSettings:
    """One `server {}` on 127.0.0.1:`port` named mx.test, auth_http on 127.0.0.1:9000."""
    return ServerSettings(file="t.conf", line=1,
                          listens=(Listen(text=f"127.0.0.1:{port}", host="127.0.0.1",
                                          port=port),),
                          protocol=protocol, server_name="mx.test",
                          auth_http=AUTH_HTTP,
                          **extra)


IMAP_CONF = server_settings("imap", 1143)
POP3_CONF = server_settings("pop3", 1110)
SMTP_CONF = server_settings("smtp", 1025, xclient=False)


def runner(machine_class, default_conf):
    """`run(data, conf, tls, machine)` -> (machine, actions) for one machine class: a new
    machine (or the one given) receives `data`, every action it has is collected."""
    def run(data: bytes, conf=default_conf, tls=False, machine=None):
        m = machine or machine_class(conf, tls=tls)
        m.receive_data(data)
        out = []
        while (a := m.next_action()) is not None:
            out.append(a)
        return m, out
    return run


def sent(actions) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, Send))


def exchange(run, *steps: tuple[bytes, bytes]):
    """Each (client bytes, exact reply) in turn on one machine; returns the machine."""
    m = None
    for data, reply in steps:
        m, actions = run(data, machine=m)
        assert sent(actions) == reply
    return m


def sent_then_closed(actions, reply: bytes) -> None:
    """The machine sent exactly `reply`, and its last action closes the session."""
    assert sent(actions) == reply
    assert isinstance(actions[-1], Close)


def logs(actions) -> list[str]:
    return [a.message for a in actions if isinstance(a, Log)]


def until_authenticate(machine, data: bytes):
    """Feed the client's lines (after the greeting, where the protocol has one) until the
    machine asks for authentication; returns the machine."""
    if hasattr(machine, "greeting"):
        machine.greeting()
    machine.receive_data(data)
    while (act := machine.next_action()) is not None:
        if isinstance(act, Authenticate):
            return machine
    raise AssertionError("no Authenticate")
