"""Item steps: built-in verify, plug-ins loaded and checked at submit, failures named by step."""

import hashlib
import sys

import pytest

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.scenes.fetch import _extension
from bulkforge.daemon.scenes.steps import StepFailed, load_steps, run_after_fetch

PLUGIN = """
def upper(data, meta):
    return data.upper(), {**meta, "upper": True}

def picky(data, meta):
    if meta["key"].endswith("7"):
        raise ValueError("I do not like sevens")
    return data, meta

def no_arguments():
    return None

def sloppy(data, meta):
    return "not bytes", meta

NOT_CALLABLE = 3
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "bf_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "bf_test_plugin"
    sys.modules.pop("bf_test_plugin", None)


def test_plugins_run_in_order_after_fetch_and_their_failures_name_them(plugin):
    offered = [f"{plugin}:upper", f"{plugin}:picky", f"{plugin}:sloppy"]
    steps = load_steps(["fetch", f"{plugin}:upper", "verify", f"{plugin}:picky"], offered)
    assert [s.name for s in steps] == ["fetch", f"{plugin}:upper", "verify", f"{plugin}:picky"]
    data, meta = run_after_fetch(steps, b"abc", {"key": "k1"})
    assert data == b"ABC" and meta["upper"] is True
    with pytest.raises(StepFailed) as failed:
        run_after_fetch(steps, b"abc", {"key": "k7"})
    assert failed.value.step == f"{plugin}:picky" and failed.value.error_class == "plugin"
    assert "sevens" in str(failed.value)
    with pytest.raises(StepFailed, match="did not return"):
        run_after_fetch(load_steps(["fetch", f"{plugin}:sloppy"], offered), b"x", {"key": "k"})


def test_verify_refuses_empty_content_and_a_wrong_sha256():
    steps = load_steps(["fetch", "verify"])
    with pytest.raises(StepFailed) as empty:
        run_after_fetch(steps, b"", {})
    assert (empty.value.step, empty.value.error_class) == ("verify", "empty")
    good = hashlib.sha256(b"data").hexdigest()
    assert run_after_fetch(steps, b"data", {"sha256": good})[0] == b"data"
    with pytest.raises(StepFailed) as wrong:
        run_after_fetch(steps, b"other", {"sha256": good})
    assert wrong.value.error_class == "checksum"


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["fetch", "no_such_module_xyz:f"], "cannot import"),
        (["fetch", "PLUGIN:missing"], "no callable missing"),
        (["fetch", "PLUGIN:NOT_CALLABLE"], "no callable NOT_CALLABLE"),
        (["fetch", "PLUGIN:no_arguments"], "must take (data: bytes, meta: dict)"),
        (["verify", "fetch"], "first step must be 'fetch'"),
        (["fetch", "verify", "verify"], "named twice"),
        (["fetch", "resize images"], "neither built in"),
        (["fetch", "os:system"], "not one bfd offers"),
        ([], "steps: give at least one"),
    ],
)
def test_steps_that_cannot_be_used_are_refused_at_submit(plugin, names, expected):
    names = [name.replace("PLUGIN", plugin) for name in names]
    offered = [name for name in names if ":" in name and not name.startswith("os:")]
    offered.append("resize images")
    with pytest.raises(InvalidArgument) as refused:
        load_steps(names, offered)
    assert expected in str(refused.value)


def test_a_step_bfd_does_not_offer_is_refused_before_anything_is_imported(tmp_path, monkeypatch):
    (tmp_path / "bf_side_effect.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_suffix('.ran').touch()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InvalidArgument, match="not one bfd offers"):
        load_steps(["fetch", "bf_side_effect:run"], ["bf_other:run"])
    assert "bf_side_effect" not in sys.modules
    assert not (tmp_path / "bf_side_effect.ran").exists()


@pytest.mark.parametrize(
    ("url", "content_type", "expected"),
    [
        ("http://h/a/b.JPG", "", "jpg"),
        ("http://h/a/b", "image/png", "png"),
        ("http://h/a/b", "", "bin"),
        # `<key>.json` is the sample's metadata: content never takes that name.
        ("http://h/a/b.json", "", "bin"),
        ("http://h/a/b", "application/json", "bin"),
    ],
)
def test_a_sample_extension_comes_from_the_url_or_the_content_type(url, content_type, expected):
    assert _extension(url, content_type) == expected


def test_decode_says_what_is_wrong_in_its_own_words():
    import io

    from PIL import Image

    from bulkforge.daemon.scenes.steps import decode

    png = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(png, format="PNG")
    size = {"width": 4, "height": 3, "original_width": 4, "original_height": 3}
    assert decode(png.getvalue(), {"key": "k"}) == (png.getvalue(), {"key": "k", **size})
    for data, words in ((b"<html>nope</html>", "not an image Pillow knows (17 B starting"),
                        (png.getvalue()[:-20], "a broken image")):  # fmt: skip
        with pytest.raises(StepFailed) as failed:
            decode(data, {})
        assert (failed.value.step, failed.value.error_class) == ("decode", "not_an_image")
        assert words in str(failed.value) and "0x" not in str(failed.value), str(failed.value)
