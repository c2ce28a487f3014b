"""A typed Python client of bfd, for other services and for bfctl, which goes through it.

    with Client() as bfd:                      # the local bfd, found as bfctl finds it
        bfd.submit("mirror-1", pb.DownloadSpec(manifest="/srv/m.jsonl", dest="/srv/data/m1"))
        job = bfd.wait("mirror-1")

One method per RPC of `bulkforge.v1.Bulkforge`, answering the generated message types. A
refusal or a failed connection raises `BulkforgeError` (a subclass for the common codes) with
the gRPC status code and bfd's message; no `grpc.RpcError` reaches the caller.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bulkforge.proto import credentials as credentials_file
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc
from bulkforge.proto.defaults import (
    NO_PERMISSION,
    NO_SOCKET,
    NOT_A_SOCKET,
    SOCKET_ENV,
    STALE,
    describe,
    find_socket,
)
from bulkforge.proto.units import host_port

PathLike = str | os.PathLike
Spec = pb.DownloadSpec | pb.ScenesSpec | pb.CleanSpec | pb.GenerateSpec

# SubmitRequest's `spec` oneof, by message type: a new kind's spec needs no change here.
SPEC_FIELDS = {
    field.message_type.full_name: field.name
    for field in pb.SubmitRequest.DESCRIPTOR.oneofs_by_name["spec"].fields
}

DEFAULT_WATCH_INTERVAL_S = 1.0
# A watch event older than this (beyond the stream's usual lag) waited in transport buffers
# while the reader was busy: the reader wants the present, so it is skipped.
MIN_STALE_S = 1.0


class BulkforgeError(Exception):
    """bfd refused the call or could not be reached: its status code and its message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


class Unreachable(BulkforgeError):
    """No bfd answers there: no socket, nobody listening, or the connection was lost."""


class DeadlineExceeded(BulkforgeError):
    """No answer before the call's timeout."""


class InvalidArgument(BulkforgeError):
    """The request, or the data it names, is malformed."""


class NotFound(BulkforgeError):
    """No job by that name."""


class AlreadyExists(BulkforgeError):
    """A job by that name exists with other parameters."""


class FailedPrecondition(BulkforgeError):
    """The job's state does not allow the verb; the message names one that does."""


class ConnectionFailed(Unreachable):
    """No connection to bfd could be made, said in plain words: where, why, what to do.

    Like SettingError, its message names settings by keyword (tls_ca) and `worded()` as the
    caller knows them. `not_running` is whether "is bfd running?" is the question to ask (no
    socket, nobody listening) rather than one of credentials or names.
    """

    def __init__(
        self, template: str, *, where: str = "", not_running: bool = False, **values: object
    ):
        self.template = template
        self.values = values
        self.where = where  # the socket or target, unless the words name the places
        self.not_running = not_running
        words = self.worded(str)
        super().__init__(grpc.StatusCode.UNAVAILABLE, f"{where}: {words}" if where else words)

    def worded(self, spell: Callable[[str], str]) -> str:
        """What went wrong and what to do, without the place (bfctl puts it in front)."""
        return worded(self.template, self.values, spell)


ERRORS_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: Unreachable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}

# What gRPC says, whatever the code, when bfd goes away in the middle of a call.
CONNECTION_LOST = dict.fromkeys(
    ("Cancelling all calls", "Socket closed", "Connection reset by peer", "Broken pipe"),
    "bfd closed the connection in the middle of the answer (it stopped or restarted)",
)


def error_from(exc: grpc.RpcError, endpoint: Endpoint | None = None) -> BulkforgeError:
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    if details in CONNECTION_LOST:
        return Unreachable(code, CONNECTION_LOST[details])
    if endpoint is not None and code == grpc.StatusCode.UNAVAILABLE:
        failed = connection_failure(details, endpoint)
        if failed is not None:
            return failed
    return ERRORS_BY_CODE.get(code, BulkforgeError)(code, details)


# gRPC's details start so when no connection could be made (C-core's words, not ours).
CONNECT_FAILED = ("failed to connect to all addresses", "errors resolving", "DNS resolution")


def connection_failure(details: str, endpoint: Endpoint) -> ConnectionFailed | None:
    """gRPC's account of a failed connection in plain words, or None if it is not one."""
    if not details.startswith(CONNECT_FAILED):
        return None
    if endpoint.socket is not None:
        return socket_failure(details, endpoint)
    return tls_failure(details, endpoint) or tcp_failure(details, endpoint)


def socket_failure(details: str, endpoint: Endpoint) -> ConnectionFailed:
    if endpoint.tried:
        return not_found_anywhere(endpoint.tried)
    why = STALE
    if "Permission denied" in details:
        why = NO_PERMISSION
    elif "No such file" in details:
        why = NO_SOCKET
    return ConnectionFailed(why, where=endpoint.shown, not_running=True)


def not_found_anywhere(tried: tuple[Path, ...]) -> ConnectionFailed:
    return ConnectionFailed(
        "no bfd answers where one listens by default: {places}; "
        "name its socket with {socket} or ${env}",
        places=describe(tried),
        env=SOCKET_ENV,
        not_running=True,
    )


def tls_failure(details: str, endpoint: Endpoint) -> ConnectionFailed | None:
    """A TLS handshake that failed: which check, and which setting fixes it."""
    where, remote = endpoint.shown, endpoint.remote
    if "CERTIFICATE_VERIFY_FAILED" in details and remote.tls_ca is None:
        template = (
            "its certificate is signed by no CA this machine trusts; "
            "give the CA that signed it with {tls_ca}"
        )
    elif "CERTIFICATE_VERIFY_FAILED" in details:
        template = (
            "its certificate is not signed by the CA in {tls_ca} ({ca}); "
            "give the CA that signed it with {tls_ca}"
        )
    elif "Hostname Verification" in details or "not in peer certificate" in details:
        template = (
            "its certificate does not name {host}; connect by a name the certificate "
            "holds, or give bfd a certificate for {host}"
        )
    elif "WRONG_VERSION_NUMBER" in details or "PACKET_LENGTH_TOO_LONG" in details:
        template = (
            "it does not speak TLS; is it the address bfd listens on with --listen "
            "(see bfctl system)?"
        )
    elif closed(details) and remote.tls_cert is None:
        template = (
            "it closed the connection during the TLS handshake; if bfd asks for a "
            "client certificate (its --tls-client-ca), give {tls_cert} and {tls_key}"
        )
    elif closed(details):
        template = (
            "it closed the connection during the TLS handshake; bfd may not trust the "
            "client certificate in {tls_cert} ({cert}), or it is stopping"
        )
    elif "handshake failed" in details.lower() or "SSL_ERROR" in details:
        template = "the TLS handshake failed; check {tls_ca}, {tls_cert} and {tls_key}"
    else:
        return None
    return ConnectionFailed(
        template,
        where=where,
        host=where.rpartition(":")[0],
        ca=remote.tls_ca,
        cert=remote.tls_cert,
    )


def closed(details: str) -> bool:
    """The peer hung up on the handshake: how gRPC says it depends on when it noticed."""
    return any(words in details for words in ("Socket closed", "Connection reset", "Broken pipe"))


def tcp_failure(details: str, endpoint: Endpoint) -> ConnectionFailed:
    where = endpoint.shown
    if details.startswith(("errors resolving", "DNS resolution")):
        host = where.rpartition(":")[0]
        return ConnectionFailed("the host name {host} cannot be resolved", where=where, host=host)
    if "Connection refused" in details:
        return ConnectionFailed(
            "nothing listens there (connection refused)", where=where, not_running=True
        )
    return ConnectionFailed("no connection could be made (the network, or a firewall)", where=where)


REMOTE_SETTINGS = ("tls_ca", "tls_cert", "tls_key", "token_file")
# Every setting a message may name: by keyword here (tls_cert), by flag in bfctl (--tls-cert).
SETTINGS = ("socket", "target", *REMOTE_SETTINGS)


def worded(template: str, values: Mapping[str, object], spell: Callable[[str], str]) -> str:
    names = {setting: spell(setting) for setting in SETTINGS}
    return template.format(**names, **values)


class SettingError(ValueError):
    """A connection setting that cannot work, found before any call.

    Its text names settings by their keywords (tls_cert); `worded()` names them as the caller
    knows them (bfctl: by its flags, --tls-cert).
    """

    def __init__(self, template: str, **values: object):
        self.template = template
        self.values = values
        super().__init__(self.worded(str))

    def worded(self, spell: Callable[[str], str]) -> str:
        return worded(self.template, self.values, spell)


@dataclass(frozen=True)
class Remote:
    """How a client proves itself to a bfd over TCP: TLS roots, a client certificate, a token."""

    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = None


@dataclass(frozen=True)
class Endpoint:
    """A gRPC target, and how to name it to a person."""

    address: str
    shown: str
    socket: Path | None = None
    remote: Remote = Remote()
    # The sockets looked at when none was named (proto/defaults.py's rule), for the error.
    tried: tuple[Path, ...] = ()


def socket_endpoint(path: PathLike, tried: tuple[Path, ...] = ()) -> Endpoint:
    absolute = Path(os.path.abspath(path))
    return Endpoint(address=f"unix:{absolute}", shown=str(absolute), socket=absolute, tried=tried)


def found_socket_endpoint(named: PathLike | None = None) -> Endpoint:
    """The socket named, else $BULKFORGE_SOCKET, else the first place bfd listens by default
    that answers: the one rule bfctl and `Client()` share (proto/defaults.py)."""
    found = find_socket(named)
    return socket_endpoint(found.path, found.tried)


def target_endpoint(target: str, remote: Remote) -> Endpoint:
    try:
        host_port(target, lowest=1)  # a server listens on a port of its own, never 0
    except ValueError as exc:
        raise SettingError("target {why}", why=exc) from None
    return Endpoint(address=target, shown=target, remote=remote)


def open_channel(endpoint: Endpoint) -> grpc.Channel:
    if endpoint.socket is not None:
        check_socket(endpoint)
        return grpc.insecure_channel(endpoint.address)
    return grpc.secure_channel(endpoint.address, tls_credentials(endpoint.remote))


def check_socket(endpoint: Endpoint) -> None:
    """Say plainly what is wrong before gRPC says it in its own words."""
    assert endpoint.socket is not None
    try:
        mode = os.stat(endpoint.socket).st_mode
    except FileNotFoundError:
        why = NO_SOCKET
    except PermissionError:
        why = NO_PERMISSION
    else:
        if stat.S_ISSOCK(mode):
            return
        why = NOT_A_SOCKET
    if endpoint.tried:
        raise not_found_anywhere(endpoint.tried)
    raise ConnectionFailed(why, where=endpoint.shown, not_running=True)


def tls_credentials(remote: Remote) -> grpc.ChannelCredentials:
    """TLS with the system roots or the given CA (a private CA is the usual case), a client
    certificate when bfd asks for one, and the bearer token on every call when given.

    Every file is read as `proto/credentials.py` says: bounded, a regular file, and the
    secrets (the token, the private key) readable by their owner only, as ssh wants its keys.
    """
    if (remote.tls_cert is None) != (remote.tls_key is None):
        raise SettingError("give {tls_cert} and {tls_key} together (a client certificate)")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(remote, "tls_ca", credentials_file.read_pem, secret=False),
        private_key=_read(remote, "tls_key", credentials_file.read_pem, secret=True),
        certificate_chain=_read(remote, "tls_cert", credentials_file.read_pem, secret=False),
    )
    token = _read(remote, "token_file", credentials_file.read_token)
    if token is None:
        return credentials
    return grpc.composite_channel_credentials(
        credentials, grpc.access_token_call_credentials(token)
    )


def _read(remote: Remote, setting: str, read: Callable[..., Any], **how: bool) -> Any:
    """What read makes of the file a setting names (None when not given), or SettingError."""
    path = getattr(remote, setting)
    if path is None:
        return None
    try:
        return read(path, **how)
    except credentials_file.CredentialError as exc:
        raise SettingError(f"{{{setting}}} {{path}}: {{why}}", path=path, why=exc.reason) from None


class Client:
    """A connection to one bfd; close it (or use it as a context manager) when done.

    `Client()` finds bfd as bfctl does ($BULKFORGE_SOCKET, else the first place bfd listens
    by default that answers, ending with the packaged unit's /run/bulkforge/bfd.sock; the
    error names every place tried), `Client("/path/bfd.sock")` connects to that socket,
    `Client(target="node7:7443", tls_ca=..., token_file=...)` over TCP with TLS
    (`tls_cert` and `tls_key` too when bfd asks for a client certificate). Every method
    takes `timeout`, the call's deadline in seconds (None: no deadline).
    """

    def __init__(
        self,
        socket: PathLike | None = None,
        *,
        target: str | None = None,
        tls_ca: PathLike | None = None,
        tls_cert: PathLike | None = None,
        tls_key: PathLike | None = None,
        token_file: PathLike | None = None,
    ):
        given = zip(REMOTE_SETTINGS, (tls_ca, tls_cert, tls_key, token_file), strict=True)
        remote = Remote(**{name: Path(path) for name, path in given if path is not None})
        if target is None:
            if remote != Remote():
                raise ValueError("tls_ca, tls_cert, tls_key and token_file go with a target")
            endpoint = found_socket_endpoint(socket)
        elif socket is not None:
            raise ValueError("give a socket or a target, not both")
        else:
            endpoint = target_endpoint(target, remote)
        self._open(endpoint)

    def _open(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._channel = open_channel(endpoint)
        self._stub = pb_grpc.BulkforgeStub(self._channel)

    @classmethod
    def at(cls, endpoint: Endpoint) -> Client:
        """A client of an endpoint already settled (bfctl's, from its flags and variables)."""
        client = cls.__new__(cls)
        client._open(endpoint)
        return client

    def close(self) -> None:
        """Close the channel; calls and watches still open end with it."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, rpc: str, request: Any, timeout: float | None) -> Any:
        try:
            return getattr(self._stub, rpc)(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise error_from(exc, self.endpoint) from exc

    def submit(self, name: str, spec: Spec, *, timeout: float | None = None) -> pb.SubmitResponse:
        """Create a job; the same name with the same spec again returns it (created False)."""
        field = SPEC_FIELDS.get(spec.DESCRIPTOR.full_name)
        if field is None:
            raise TypeError(f"a job's spec is one of {', '.join(SPEC_FIELDS)}, not {spec!r}")
        return self._call("Submit", pb.SubmitRequest(name=name, **{field: spec}), timeout)

    def list(
        self, *, states: Iterable[str] = (), kind: str = "", timeout: float | None = None
    ) -> pb.ListResponse:
        return self._call("List", pb.ListRequest(states=states, kind=kind), timeout)

    def status(self, name: str, *, timeout: float | None = None) -> pb.Job:
        return self._call("Status", pb.JobRef(name=name), timeout)

    def pause(self, name: str, *, timeout: float | None = None) -> pb.Job:
        return self._call("Pause", pb.JobRef(name=name), timeout)

    def resume(self, name: str, *, timeout: float | None = None) -> pb.Job:
        return self._call("Resume", pb.JobRef(name=name), timeout)

    def cancel(self, name: str, *, timeout: float | None = None) -> pb.Job:
        return self._call("Cancel", pb.JobRef(name=name), timeout)

    def remove(
        self, name: str, *, delete_output: bool = False, timeout: float | None = None
    ) -> pb.RemoveResponse:
        """Forget an ended job; with delete_output, delete what it wrote first."""
        request = pb.RemoveRequest(name=name, delete_output=delete_output)
        return self._call("Remove", request, timeout)

    def retry(
        self, name: str, *, step: str = "", error: str = "", timeout: float | None = None
    ) -> pb.RetryResponse:
        """Queue failed items again: all, or those of `step` whose error contains `error`."""
        return self._call("Retry", pb.RetryRequest(name=name, step=step, error=error), timeout)

    def failures(
        self, name: str, *, step: str = "", limit: int = 0, timeout: float | None = None
    ) -> pb.FailuresResponse:
        request = pb.FailuresRequest(name=name, step=step, limit=limit)
        return self._call("Failures", request, timeout)

    def stats(self, name: str, *, timeout: float | None = None) -> pb.StatsResponse:
        return self._call("Stats", pb.JobRef(name=name), timeout)

    def analyze(
        self,
        source: pb.DownloadSpec,
        *,
        largest: int = 0,
        space: str = "",
        safety_margin: float | None = None,
        timeout: float | None = None,
    ) -> pb.AnalyzeResponse:
        request = pb.AnalyzeRequest(
            source=source, largest=largest, space=space, safety_margin=safety_margin
        )
        return self._call("Analyze", request, timeout)

    def plan(
        self,
        source: pb.DownloadSpec,
        *,
        space: str,
        oversize: str = "",
        safety_margin: float | None = None,
        timeout: float | None = None,
    ) -> pb.PlanResponse:
        request = pb.PlanRequest(
            source=source, space=space, oversize=oversize, safety_margin=safety_margin
        )
        return self._call("Plan", request, timeout)

    def continue_(self, name: str, *, timeout: float | None = None) -> pb.Job:
        """`Continue` (a Python keyword): the next batch on the same disk."""
        return self._call("Continue", pb.JobRef(name=name), timeout)

    def swap(self, name: str, *, dest: str = "", timeout: float | None = None) -> pb.SwapResponse:
        return self._call("Swap", pb.SwapRequest(name=name, dest=dest), timeout)

    def verify(
        self, name: str, *, batch: int | None = None, timeout: float | None = None
    ) -> pb.VerifyResponse:
        return self._call("Verify", pb.VerifyRequest(name=name, batch=batch), timeout)

    def export(self, name: str, dest: str, *, timeout: float | None = None) -> pb.ExportResponse:
        return self._call("Export", pb.ExportRequest(name=name, dest=dest), timeout)

    def system(
        self, *, changes: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> pb.SystemResponse:
        """What the governor sees; `changes` sets limits until bfd restarts."""
        return self._call("System", pb.SystemRequest(set=changes or {}), timeout)

    def watch(
        self,
        name: str,
        *,
        interval_s: float = DEFAULT_WATCH_INTERVAL_S,
        timeout: float | None = None,
    ) -> Generator[pb.WatchEvent, None, None]:
        """The job's state every `interval_s` until the final event (completed, failed,
        cancelled, awaiting a swap), and then the iterator ends.

        A reader that fell behind gets the present, not the backlog: events that waited in
        transport buffers are skipped (`fresh_events`). `close()` the iterator to stop early.
        """
        try:
            stream = self._stub.Watch(
                pb.WatchRequest(name=name, interval_s=interval_s), timeout=timeout
            )
            try:
                yield from fresh_events(stream, interval_s or DEFAULT_WATCH_INTERVAL_S)
            finally:
                stream.cancel()
        except grpc.RpcError as exc:
            raise error_from(exc, self.endpoint) from exc

    def wait(
        self,
        name: str,
        *,
        interval_s: float = DEFAULT_WATCH_INTERVAL_S,
        timeout: float | None = None,
    ) -> pb.Job:
        """Watch until the job needs no more watching and return it as it ended; its `tone`
        says how: ok (completed), bad (failed), idle (cancelled), held (awaiting a swap)."""
        for event in self.watch(name, interval_s=interval_s, timeout=timeout):
            if event.final:
                return event.job
        raise Unreachable(
            grpc.StatusCode.UNAVAILABLE, f"bfd ended the watch of job {name!r} before its end"
        )


def fresh_events(events: Iterable[pb.WatchEvent], interval_s: float) -> Iterator[pb.WatchEvent]:
    """The events less stale than the stream's usual lag allows, and the final one always.

    A stream's events wait in HTTP/2 windows while its reader is busy. Lag is how long ago
    bfd read an event's state; the smallest lag seen is the stream's usual lag (the hosts'
    clock skew and the network), and an event lagging more than max(2 intervals, 1 s) beyond
    it waited for the reader. A bfd too old to say when it read a state (observed_at 0) has
    nothing skipped.
    """
    allowed = max(2 * interval_s, MIN_STALE_S)
    usual_lag = float("inf")
    for event in events:
        if event.observed_at:
            lag = time.time() - event.observed_at
            usual_lag = min(usual_lag, lag)
            if lag - usual_lag > allowed and not event.final:
                continue
        yield event
