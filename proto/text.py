"""Text that both ends show a person (standard library only, as bfctl starts fast)."""

# Control characters (C0, DEL, C1, the Unicode line and paragraph separators) as escapes.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def one_line(text: str) -> str:
    """text on one line, its control characters escaped: a log line or a terminal line that
    quotes what a client or a remote sent cannot forge another, nor move the cursor."""
    return text.translate(_CONTROL)
