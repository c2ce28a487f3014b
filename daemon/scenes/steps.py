"""The named steps an item goes through, built in or plugged in as `module:function`.

Every step takes the item's bytes and metadata and returns new bytes and
metadata, or raises. A step that raises fails the item with step = the step's
name and the exception as its error; the other items go on. Plug-ins are
imported at submit time, so a path that does not import, or names nothing
callable, is refused before the job is accepted rather than failing every item.

`fetch` is built in but runs in the pipeline (it needs the shared HTTP client
and the downloader's retry rules); the others run here.
"""

import hashlib
import importlib
import importlib.util
import inspect
import io
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from bulkforge.daemon.errors import InvalidArgument
from bulkforge.proto.text import did_you_mean
from bulkforge.proto.units import size_text

StepFunction = Callable[[bytes, dict[str, Any]], tuple[bytes, dict[str, Any]]]

FETCH = "fetch"
DECODE = "decode"
_PLUGIN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class StepFailed(Exception):
    """An item failed in a step: the step's name and an error class travel with it."""

    def __init__(self, step: str, error_class: str, message: str, attempts: int = 1):
        super().__init__(message)
        self.step = step
        self.error_class = error_class
        self.attempts = attempts


@dataclass(frozen=True)
class Step:
    name: str
    run: StepFunction | None  # None: fetch, which the pipeline runs itself


def verify(data: bytes, meta: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Content is not empty, and matches the item's sha256 when its row gave one."""
    if not data:
        raise StepFailed("verify", "empty", "the content is empty")
    expected = meta.get("sha256")
    if expected:
        got = hashlib.sha256(data).hexdigest()
        if got != str(expected).lower():
            raise StepFailed("verify", "checksum", f"sha256 {got}, expected {expected}")
    return data, meta


# What `decode` adds to a sample's metadata, by img2dataset's names: bfd does not resize,
# so the original size is the size.
IMAGE_SIZE = ("width", "height", "original_width", "original_height")


def decode(data: bytes, meta: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Content decodes as an image (Pillow reads its header and checks its structure);
    its width and height go into the metadata."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.verify()
    except UnidentifiedImageError:
        # Pillow's own words name its in-memory buffer (<_io.BytesIO object at 0x…>).
        message = f"not an image Pillow knows ({size_text(len(data))} starting {data[:8]!r})"
        raise StepFailed("decode", "not_an_image", message) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise StepFailed("decode", "not_an_image", f"a broken image: {exc}") from None
    return data, {**meta, **dict(zip(IMAGE_SIZE, (width, height, width, height), strict=True))}


BUILT_IN: dict[str, StepFunction | None] = {FETCH: None, "verify": verify, "decode": decode}


def load_steps(names: list[str], offered: Collection[str] = ()) -> list[Step]:
    """The steps of a job, in order; InvalidArgument naming what cannot be used.

    A plug-in must be one bfd's operator offers (`offered`: bfd --plugin-step): it is
    imported only then, so a client cannot make bfd import a module of its choosing.
    """
    if not names:
        raise InvalidArgument("steps: give at least one (e.g. fetch, verify)")
    if names[0] != FETCH:
        raise InvalidArgument(f"the first step must be {FETCH!r}: the others work on its bytes")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"a step is named twice in {','.join(names)}")
    if "decode" in names and importlib.util.find_spec("PIL") is None:
        raise InvalidArgument("step 'decode' needs Pillow: pip install 'bulkforge[images]'")
    for name in names:
        if name not in BUILT_IN and name not in offered:
            extra = f"; plug-ins offered: {', '.join(offered)}" if offered else ""
            near = did_you_mean(name, [*BUILT_IN, *offered])
            raise InvalidArgument(
                f"step {name[:100]!r} is not one bfd offers{near} (built in: "
                f"{', '.join(BUILT_IN)}{extra}; the operator offers a plug-in with "
                "bfd --plugin-step MODULE:FUNCTION)"
            )
    return [Step(name, BUILT_IN[name] if name in BUILT_IN else _plugin(name)) for name in names]


def _plugin(path: str) -> StepFunction:
    if not _PLUGIN.match(path):
        raise InvalidArgument(
            f"step {path!r} is neither built in ({', '.join(BUILT_IN)}) nor module:function"
        )
    module_name, function_name = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary code: any error is the plug-in's
        raise InvalidArgument(f"step {path!r}: cannot import {module_name}: {exc}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise InvalidArgument(f"step {path!r}: {module_name} has no callable {function_name}")
    try:
        inspect.signature(function).bind(b"", {})
    except TypeError:
        raise InvalidArgument(
            f"step {path!r} must take (data: bytes, meta: dict) and return (bytes, dict)"
        ) from None
    except ValueError:
        pass  # no signature to inspect (a builtin): trust it
    return function


def run_after_fetch(steps: list[Step], data: bytes, meta: dict) -> tuple[bytes, dict]:
    """Run every step after fetch in order; StepFailed names the one that failed."""
    for step in steps:
        if step.run is None:
            continue
        try:
            result = step.run(data, meta)
            if not (
                isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bytes)
            ):
                raise StepFailed(step.name, "plugin", "the step did not return (bytes, dict)")
            data, meta = result[0], dict(result[1])
        except StepFailed:
            raise
        # BaseException: a plug-in's SystemExit must fail its item, not stop bfd.
        except BaseException as exc:
            raise StepFailed(step.name, "plugin", f"{type(exc).__name__}: {exc}") from None
    return data, meta
