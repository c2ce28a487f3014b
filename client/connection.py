"""Where bfctl finds bfd: its flags, then the BULKFORGE_* variables, then the default places
(the rule `Client()` follows too: proto/defaults.py)."""

import argparse
import os
from pathlib import Path

from bulkforge.client.api import Endpoint, Remote, found_socket_endpoint, target_endpoint

TLS_CA_ENV = "BULKFORGE_TLS_CA"
TLS_CERT_ENV = "BULKFORGE_TLS_CERT"
TLS_KEY_ENV = "BULKFORGE_TLS_KEY"
TOKEN_FILE_ENV = "BULKFORGE_TOKEN_FILE"


def endpoint_from_args(args: argparse.Namespace) -> Endpoint:
    """--target, else --socket, else $BULKFORGE_SOCKET, else the first default place that
    answers (where bfd listens when started here first, the packaged unit's last)."""
    if args.target:
        return target_endpoint(args.target, remote_from_args(args))
    return found_socket_endpoint(args.socket)


DEFAULT_TIMEOUT_S = 30.0


def call_timeout(
    args: argparse.Namespace, default: float | None = DEFAULT_TIMEOUT_S
) -> float | None:
    """The deadline of a unary call: --timeout if given (0: none), else the command's default."""
    if args.timeout is None:
        return default
    return args.timeout if args.timeout > 0 else None


def remote_from_args(args: argparse.Namespace) -> Remote:
    """--tls-ca, --tls-cert, --tls-key and --token-file, else their BULKFORGE_* variables."""

    def given(flag: str, env: str) -> Path | None:
        value = getattr(args, flag, None) or os.environ.get(env)
        return Path(value) if value else None

    return Remote(
        tls_ca=given("tls_ca", TLS_CA_ENV),
        tls_cert=given("tls_cert", TLS_CERT_ENV),
        tls_key=given("tls_key", TLS_KEY_ENV),
        token_file=given("token_file", TOKEN_FILE_ENV),
    )
