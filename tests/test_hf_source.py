"""Hugging Face repos as a source, against our loopback Hub (tests/hf_server.py).

HF_ENDPOINT points at the loopback server, as an operator would point bfd at a mirror; the
calls go through the real huggingface_hub client, its pagination and its error handling.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator

import httpx
import pytest
from hf_server import HubFile, HubServer

from bulkforge.daemon.downloader.sources.hf import HFRef, HFRepo, parse_hf_ref
from bulkforge.daemon.errors import InvalidArgument, SourceUnavailable

TOKEN = "hf_loopbacktoken0123456789"
# Ten files (four of them LFS) in nested folders: with pages of 3 the tree (files and folders)
# takes six requests.
FILES = {
    ".gitattributes": HubFile(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"),
    "README.md": HubFile(b"# corpus\n"),
    "data/train/part-00000.parquet": HubFile(b"train-0" * 1000, lfs=True),
    "data/train/part-00001.parquet": HubFile(b"train-1" * 1500, lfs=True),
    "data/train/part-00002.parquet": HubFile(b"train-2" * 700, lfs=True),
    "data/test/part-00000.parquet": HubFile(b"test-0" * 900, lfs=True),
    "data/test/notes.txt": HubFile(b"held out\n"),
    "docs/guide/intro.md": HubFile(b"hello"),
    "docs/guide/deep/more.md": HubFile(b""),
    "odd name #1?.txt": HubFile(b"quoted in URLs"),
}
LFS = {path for path, file in FILES.items() if file.lfs}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with HubServer(page_size=3, token=TOKEN) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        server.add_repo("acme/corpus", FILES)
        yield server


def repo(ref: str, **kwargs) -> HFRepo:
    return HFRepo(parse_hf_ref(ref), **kwargs)


def listing(source: HFRepo, sha: str, page_size: int = 1000) -> dict:
    entries = [entry for page in source.pages(sha, page_size) for entry in page]
    paths = [entry.path for entry in entries]
    assert len(paths) == len(set(paths)), f"listed twice: {paths}"
    return {entry.path: entry for entry in entries}


# -- refs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("datasets/ORG/NAME@REV", HFRef("dataset", "ORG/NAME", "REV")),
        ("ORG/NAME", HFRef("model", "ORG/NAME", None)),
        ("models/ORG/NAME", HFRef("model", "ORG/NAME", None)),
        ("spaces/org/app@main", HFRef("space", "org/app", "main")),
        ("  datasets/org/set.v2_x-y/ ", HFRef("dataset", "org/set.v2_x-y", None)),
        ("org/model@refs/pr/1", HFRef("model", "org/model", "refs/pr/1")),
        ("org/model@" + "a" * 40, HFRef("model", "org/model", "a" * 40)),
    ],
)
def test_parse_hf_ref(raw: str, expected: HFRef) -> None:
    assert parse_hf_ref(raw) == expected


@pytest.mark.parametrize(
    ("raw", "hint"),
    [
        ("", "ORG/NAME"),
        ("justaname", "ORG/NAME"),
        ("a/b/c/d", "ORG/NAME"),
        ("buckets/org/name", "unknown repo type 'buckets'"),
        ("datasets/squad", "datasets/ORG/squad"),
        ("org/name@", "after '@'"),
        ("org/name@two words", "after '@'"),
        ("https://huggingface.co/datasets/org/name", "is a URL"),
        ("org/bad--name", "--"),
        ("org/na me", "alphanumeric"),
    ],
)
def test_bad_refs_are_refused_with_a_hint(raw: str, hint: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_hf_ref(raw)
    assert hint in str(caught.value)


def test_ref_renders_as_the_operator_writes_it() -> None:
    assert str(parse_hf_ref("datasets/org/name@v1")) == "datasets/org/name@v1"
    assert str(parse_hf_ref("models/org/name")) == "org/name"


# -- pinning ------------------------------------------------------------------------------


def test_pin_resolves_main_to_the_commit_sha(hub: HubServer) -> None:
    head = hub.repos[("dataset", "acme/corpus")].head
    assert repo("datasets/acme/corpus").pin() == head
    assert repo("datasets/acme/corpus@main").pin() == head
    assert hub.seen("/revision/main"), "pin asked for the default revision by name"


def test_pin_keeps_an_explicit_sha_and_its_files_after_main_moves(hub: HubServer) -> None:
    hub_repo = hub.repos[("dataset", "acme/corpus")]
    old = hub_repo.head
    new = hub_repo.push({"README.md": b"# v2\n", "v2.bin": HubFile(b"new", lfs=True)})

    assert repo(f"datasets/acme/corpus@{old}").pin() == old
    assert repo("datasets/acme/corpus").pin() == new
    source = repo("datasets/acme/corpus")
    assert set(listing(source, old)) == set(FILES)
    assert set(listing(source, new)) == {"README.md", "v2.bin"}
    assert all(f"/resolve/{old}/" in e.url for e in listing(source, old).values())


def test_unknown_revision_is_refused(hub: HubServer) -> None:
    with pytest.raises(InvalidArgument, match="no revision 'nope'"):
        repo("datasets/acme/corpus@nope").pin()


def test_missing_repo_is_refused_clearly(hub: HubServer) -> None:
    with pytest.raises(InvalidArgument, match="no such repo") as caught:
        repo("datasets/acme/absent").pin()
    assert "datasets/acme/absent" in str(caught.value)
    assert hub.url in str(caught.value)
    # The same name as a model is another repo: the type is part of the identity.
    with pytest.raises(InvalidArgument, match="no such repo"):
        repo("acme/corpus").pin()


def test_unreachable_endpoint_is_unavailable(hub: HubServer) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    source = repo("datasets/acme/corpus", endpoint=f"http://127.0.0.1:{closed}")
    with pytest.raises(SourceUnavailable, match="cannot reach"):
        source.pin()


# -- the tree -----------------------------------------------------------------------------


def test_tree_pages_yield_every_file_once(hub: HubServer) -> None:
    source = repo("datasets/acme/corpus")
    sha = source.pin()
    hub.clear_seen()

    pages = list(source.pages(sha, page_size=4))

    assert [len(page) for page in pages] == [4, 4, 2]
    assert {entry.path for page in pages for entry in page} == set(FILES)
    tree = hub.seen("/tree/")
    # 10 files + 6 folders, 3 per page: every page fetched once, by following the Link header.
    assert len(tree) == 6
    assert [bool(s.query.get("cursor")) for s in tree] == [False] + [True] * 5
    assert all(s.path == f"/api/datasets/acme/corpus/tree/{sha}" for s in tree)
    assert tree[0].query["recursive"] == "true" and tree[0].query["expand"] == "false"


def test_pages_are_read_lazily(hub: HubServer) -> None:
    source = repo("datasets/acme/corpus")
    sha = source.pin()
    hub.clear_seen()

    pages = source.pages(sha, page_size=2)
    assert hub.seen("/tree/") == [], "nothing is listed before the first page is asked for"
    first = next(pages)

    assert len(first) == 2
    assert len(hub.seen("/tree/")) == 1, "one page of two files needs one request of three"
    pages.close()


def test_lfs_files_carry_their_sha256_and_others_only_a_size(hub: HubServer) -> None:
    source = repo("datasets/acme/corpus")
    entries = listing(source, source.pin())

    for path, file in FILES.items():
        entry = entries[path]
        assert entry.size == len(file.data)
        assert entry.sha256 == (hashlib.sha256(file.data).hexdigest() if path in LFS else None)
        assert entry.md5 is None and entry.etag is None and entry.checksum_url is None


def test_include_and_exclude_globs(hub: HubServer) -> None:
    source = repo("datasets/acme/corpus")
    sha = source.pin()

    parquet = repo("datasets/acme/corpus", include=["*.parquet"], exclude=["data/test/*"])
    assert set(listing(parquet, sha)) == {
        "data/train/part-00000.parquet",
        "data/train/part-00001.parquet",
        "data/train/part-00002.parquet",
    }
    # A pattern ending in "/" means the whole folder, as with `hf download --include`.
    docs = repo("datasets/acme/corpus", include=["docs/"])
    assert set(listing(docs, sha)) == {"docs/guide/intro.md", "docs/guide/deep/more.md"}
    no_data = repo("datasets/acme/corpus", exclude=["data/*", ".*"])
    assert set(listing(no_data, sha)) == {
        "README.md",
        "docs/guide/intro.md",
        "docs/guide/deep/more.md",
        "odd name #1?.txt",
    }


def test_resolve_urls_serve_the_exact_bytes(hub: HubServer) -> None:
    source = repo("datasets/acme/corpus")
    sha = source.pin()
    entries = listing(source, sha)

    assert entries["odd name #1?.txt"].url == (
        f"{hub.url}/datasets/acme/corpus/resolve/{sha}/odd%20name%20%231%3F.txt"
    )
    with httpx.Client(follow_redirects=True, timeout=5) as client:
        for path, entry in entries.items():
            response = client.get(entry.url, headers=source.auth_headers())
            assert response.status_code == 200, (path, response.text)
            assert response.content == FILES[path].data, path
            redirected = bool(response.history)
            assert redirected == (path in LFS), "LFS files come from the CDN, as on the Hub"


def test_model_repo_urls_have_no_type_prefix(hub: HubServer) -> None:
    hub.add_repo("acme/tiny-model", {"config.json": b"{}"}, repo_type="model")
    source = repo("acme/tiny-model")
    sha = source.pin()
    [entry] = listing(source, sha).values()
    assert entry.url == f"{hub.url}/acme/tiny-model/resolve/{sha}/config.json"
    assert httpx.get(entry.url).content == b"{}"


# -- tokens -------------------------------------------------------------------------------


def test_private_repo_needs_the_token_and_gets_it(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("acme/secret", {"w.bin": HubFile(b"weights", lfs=True)}, private=True)

    anonymous = repo("datasets/acme/secret")
    assert anonymous.auth_headers() == {}
    with pytest.raises(InvalidArgument, match="HF_TOKEN") as caught:
        anonymous.pin()
    assert "private" in str(caught.value)

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.clear_seen()
    source = repo("datasets/acme/secret")
    assert source.auth_headers() == {"authorization": f"Bearer {TOKEN}"}
    [entry] = listing(source, source.pin()).values()
    api_calls = hub.seen("/api/")
    assert api_calls and all(s.authorization == f"Bearer {TOKEN}" for s in api_calls)

    assert httpx.get(entry.url).status_code == 401
    with httpx.Client(follow_redirects=True) as client:
        response = client.get(entry.url, headers=source.auth_headers())
    assert response.content == b"weights"
    assert hub.seen("/cdn/")[-1].authorization is None, "the token stays on the Hub's origin"


def test_an_explicit_endpoint_and_token_win_over_the_environment(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("acme/secret", {"a.txt": b"a"}, private=True)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    source = repo("datasets/acme/secret", endpoint=hub.url + "/", token=TOKEN)
    assert source.endpoint == hub.url
    assert source.pin() == hub.repos[("dataset", "acme/secret")].head


def test_a_wrong_token_is_named(hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(InvalidArgument, match="rejected the token in HF_TOKEN"):
        repo("datasets/acme/corpus").pin()


def test_gated_repo_is_refused_at_pin_without_access(
    hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add_repo("acme/gated", {"a.txt": b"a"}, gated=True)
    with pytest.raises(InvalidArgument, match="is gated") as caught:
        repo("datasets/acme/gated").pin()
    assert "HF_TOKEN" in str(caught.value)

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert repo("datasets/acme/gated").pin() == hub.repos[("dataset", "acme/gated")].head


# -- untrusted paths ----------------------------------------------------------------------


def test_a_path_escaping_the_destination_is_refused(hub: HubServer) -> None:
    hub.add_repo("acme/evil", {"ok.txt": b"fine", "../x": b"escape"})
    source = repo("datasets/acme/evil")
    sha = source.pin()
    with pytest.raises(InvalidArgument, match=r"'\.\./x' escapes the destination") as caught:
        listing(source, sha)
    assert "datasets/acme/evil" in str(caught.value)
    # Excluded, it is never written, so it is no reason to refuse the rest.
    assert set(listing(repo("datasets/acme/evil", exclude=["../*"]), sha)) == {"ok.txt"}
