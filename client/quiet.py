"""bfctl speaks to people in its own words: gRPC's C core must not add its log lines.

A failed TLS handshake makes the C core print `I1207 … ssl_transport_security.cc:2563]
Handshake failed …` on stderr by itself, beside bfctl's own message. Its verbosity is read
once, when grpc is imported, so bfctl's entry point calls `quiet_grpc_logs()` before that.
Only bfctl does: a service that imports the client keeps gRPC's logging as it set it.
Standard library only.
"""

import os

VERBOSITY_ENV = "GRPC_VERBOSITY"
DEBUG_ENV = "BULKFORGE_DEBUG"
# Whether bfctl set the variable itself (a bfd it starts gets the environment without it).
set_by_bfctl = False


def quiet_grpc_logs() -> None:
    """No gRPC log lines, unless the operator asked for them (GRPC_VERBOSITY set, or
    BULKFORGE_DEBUG=1)."""
    global set_by_bfctl
    if VERBOSITY_ENV in os.environ or os.environ.get(DEBUG_ENV) == "1":
        return
    os.environ[VERBOSITY_ENV] = "NONE"
    set_by_bfctl = True
