"""What a file's bytes are hashed with as they pass (standard library only: bfd and the
transfer workers both use it, and bfd must not load pycurl)."""

import hashlib


class Hashes:
    """What a file's bytes are hashed with as they pass: always sha256 (what bfd records
    and `bfctl verify` checks), and the manifest's own kind when it is another (md5)."""

    def __init__(self, kind: str | None = None):
        self._by_kind = {"sha256": hashlib.sha256()}
        if kind and kind not in self._by_kind:
            self._by_kind[kind] = hashlib.new(kind)

    def update(self, data: bytes) -> None:
        for hasher in self._by_kind.values():
            hasher.update(data)

    def hexdigest(self, kind: str | None = "sha256") -> str | None:
        hasher = self._by_kind.get(kind) if kind else None
        return hasher.hexdigest() if hasher is not None else None
