"""Credential files, read alike by bfd and bfctl (standard library only, so bfctl starts fast).

Checked as ssh checks keys: a secret (a bearer token, a private key) must be a regular file
that neither group nor others can read or write, and every credential file is read with a
size bound, so `/dev/zero` or a FIFO given by mistake is refused at once instead of hanging
or filling memory. A token is one line of printable ASCII: one trailing newline (as `echo`
and editors write it) is dropped; any other whitespace or control character is refused,
since a token that silently lost or kept a space would fail far from its cause.
"""

import os
import stat
from pathlib import Path

# A token is a line; a PEM bundle of a private CA (or the system's) fits in a few hundred KiB.
TOKEN_MAX_BYTES = 4096
PEM_MAX_BYTES = 1024 * 1024
# Group and others may do nothing with a secret (ssh's rule for private keys).
TOO_OPEN = 0o077


class CredentialError(ValueError):
    """A credential file that cannot be used; `reason` says why and what to do (no path)."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def read_bounded(path: Path, limit: int, *, secret: bool) -> bytes:
    """The bytes of the regular file at path, at most limit; a secret must be private."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer before we can refuse it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise CredentialError(f"cannot be read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CredentialError("is not a regular file (a device, FIFO or directory)")
        if secret and info.st_mode & TOO_OPEN:
            mode = stat.S_IMODE(info.st_mode)
            raise CredentialError(
                f"permissions {mode:04o} are too open: a secret must be readable by its "
                f"owner only (chmod 600 {path})"
            )
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise CredentialError(f"cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise CredentialError(f"is larger than {limit} bytes: not a credential file")
    return data


def _read_at_most(fd: int, count: int) -> bytes:
    chunks: list[bytes] = []
    while count > 0 and (chunk := os.read(fd, min(count, 65536))):
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def parse_token(data: bytes) -> str:
    """The token in a token file's bytes: one line of printable ASCII, no whitespace."""
    line = data.removesuffix(b"\n")
    if not line:
        raise CredentialError("is empty: write the token on one line")
    for index, byte in enumerate(line):
        if not 0x21 <= byte <= 0x7E:
            what = "a newline" if byte == 0x0A else f"byte 0x{byte:02x}"
            raise CredentialError(
                f"holds {what} at offset {index}: a token is one line of printable ASCII "
                "without spaces (one trailing newline is allowed)"
            )
    return line.decode("ascii")


def read_token(path: Path) -> str:
    """The token of a token file: private, bounded, one line."""
    return parse_token(read_bounded(path, TOKEN_MAX_BYTES, secret=True))


def read_pem(path: Path, *, secret: bool) -> bytes:
    """A PEM file (a certificate, a CA bundle, or a private key when secret)."""
    data = read_bounded(path, PEM_MAX_BYTES, secret=secret)
    if b"-----BEGIN " not in data:
        raise CredentialError("holds no PEM block (-----BEGIN ...): not a PEM file")
    return data
