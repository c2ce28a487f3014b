"""The installer makes a group of partials durable at once; one bad file fails alone."""

import asyncio
import os

from bulkforge.daemon.downloader.install import (
    Installable,
    Installer,
    InstallFailed,
    install_group,
)


def _partial(directory, name: str, data: bytes) -> Installable:
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f"{name}.partial"
    partial.write_bytes(data)
    return Installable(partial, directory / name, len(data))


def test_a_group_installs_every_file_and_fails_only_the_bad_ones(tmp_path):
    contents = {f"f{i}": os.urandom(100 + i) for i in range(20)}
    good = [
        _partial(tmp_path / f"d{i % 3}", name, data)
        for i, (name, data) in enumerate(contents.items())
    ]
    grown = _partial(tmp_path / "d0", "grown", b"x" * 10)
    grown.partial.write_bytes(b"x" * 11)  # changed after it was verified
    blocked = _partial(tmp_path / "d1", "blocked", b"y" * 5)
    (blocked.target / "inside").mkdir(parents=True)  # a non-empty directory holds the name
    gone = _partial(tmp_path / "d2", "gone", b"z")
    gone.partial.unlink()

    outcomes = install_group([*good, grown, blocked, gone])

    assert outcomes[:20] == [None] * 20
    for item in good:
        assert item.target.read_bytes() == contents[item.target.name]
        assert not item.partial.exists()
    failures = {
        item.target.name: outcome
        for item, outcome in zip([grown, blocked, gone], outcomes[20:], strict=True)
    }
    assert all(isinstance(f, InstallFailed) for f in failures.values())
    assert (failures["grown"].failure.step, failures["grown"].failure.error_class) == (
        "verify",
        "size",
    )
    assert failures["blocked"].failure.step == "rename"
    assert failures["gone"].failure.step == "rename"
    assert grown.partial.exists() and not grown.target.exists()


def test_an_already_installed_target_is_synced_not_renamed(tmp_path):
    item = _partial(tmp_path, "done", b"abc")
    os.replace(item.partial, item.target)
    item.installed = True
    assert install_group([item]) == [None]
    assert item.target.read_bytes() == b"abc"


def test_concurrent_installs_share_groups(tmp_path):
    items = [_partial(tmp_path, f"f{i}", os.urandom(64)) for i in range(200)]

    committed: list[list] = []

    async def commit(group: list) -> list:
        # A group is committed only once all of it is in place under its final name.
        assert all(item.target.exists() and not item.partial.exists() for item in group)
        committed.append(group)
        return [None] * len(group)

    async def install_all() -> Installer:
        installer = Installer(commit)
        await asyncio.gather(*(installer.install(item) for item in items))
        return installer

    installer = asyncio.run(install_all())
    assert installer.files == 200
    # All were queued before the first group began: far fewer groups than files.
    assert installer.groups < 10
    assert len(committed) == installer.groups
    assert sorted(id(item) for group in committed for item in group) == sorted(map(id, items))


def test_a_file_the_commit_refuses_fails_alone(tmp_path):
    items = [_partial(tmp_path, f"f{i}", os.urandom(64)) for i in range(3)]

    async def commit(group: list) -> list:
        return [RuntimeError("no longer verifying") if i is items[1] else None for i in group]

    async def install_all() -> list:
        installer = Installer(commit)
        return await asyncio.gather(*map(installer.install, items), return_exceptions=True)

    outcomes = asyncio.run(install_all())
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], RuntimeError)
