"""The metric families, defined once prometheus_client is in multiprocess mode.

Imported only when `metrics_listen` is set; proxy.metrics.store has switched
prometheus_client to its multiprocess value class before this module defines anything.
"""

from __future__ import annotations

from postern.proxy.metrics import store
from prometheus_client import Counter, Gauge, Histogram

store.use_multiprocess_values()

SERVER = ("server", "protocol")  # server: the listen address as nginx prints it
# auth_http and backend steps: a loopback round trip is well under a millisecond, a slow
# auth server or a stuck backend takes up to its timeout (60 s by default)
LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
           10.0, 30.0, 60.0)

ACCEPTED = Counter("postern_connections_accepted", "Client connections accepted", SERVER,
                   registry=None)
REFUSED = Counter("postern_connections_refused", "Client connections refused at accept",
                  (*SERVER, "reason"), registry=None)
SESSIONS = Gauge("postern_sessions", "Open client sessions by phase", (*SERVER, "phase"),
                 registry=None, multiprocess_mode="livesum")
AUTH = Counter("postern_auth_requests", "auth_http requests by outcome (ok, failed, wait, "
               "internal_error)", (*SERVER, "outcome"), registry=None)
AUTH_SECONDS = Histogram("postern_auth_request_duration_seconds",
                         "auth_http request latency by outcome", (*SERVER, "outcome"),
                         buckets=LATENCY, registry=None)
BACKEND_CONNECT_SECONDS = Histogram("postern_backend_connect_duration_seconds",
                                    "Backend TCP connect latency", SERVER, buckets=LATENCY,
                                    registry=None)
BACKEND_LOGIN_SECONDS = Histogram("postern_backend_login_duration_seconds",
                                  "Backend login latency, from connected to logged in",
                                  SERVER, buckets=LATENCY, registry=None)
BACKEND_FAILURES = Counter("postern_backend_failures", "Backend connections or logins that "
                           "failed, by stage (connect, login, closed, timeout)",
                           (*SERVER, "stage"), registry=None)
RELAYED_BYTES = Counter("postern_relayed_bytes", "Payload bytes relayed after login "
                        "(plaintext, after TLS)", (*SERVER, "direction"), registry=None)
TLS_HANDSHAKES = Counter("postern_tls_handshakes", "Client TLS handshakes completed",
                         (*SERVER, "mode"), registry=None)
TLS_FAILURES = Counter("postern_tls_handshake_failures", "Client TLS handshakes that failed, "
                       "by reason", (*SERVER, "mode", "reason"), registry=None)
PROTOCOL_ERRORS = Counter("postern_protocol_errors", "Invalid client commands", SERVER,
                          registry=None)
MAX_ERRORS_CLOSES = Counter("postern_max_errors_closes", "Sessions closed for reaching "
                            "max_errors", SERVER, registry=None)
LIMIT_HITS = Counter("postern_limit_hits", "Sessions refused or delayed by a limit, by zone "
                     "and kind (conn, req, auth)", ("zone", "kind"), registry=None)
