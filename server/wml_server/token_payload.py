"""JWT payloads the v3-era Python client can read.

`watson-machine-learning-client` 1.0.x reads a token's `exp` by decoding its payload with the standard base64
alphabet (instance.py, `_get_expiration_datetime`), not the URL-safe one JWTs use: a payload whose encoding holds
`-` or `_` (the sextets 62 and 63) decodes to garbage there and the client fails. The claims themselves (a
user name, an instance id) can make such sextets whatever the nonce, so the payload's JSON is written so that
none appears: JSON lets any character of a string be written as a `\\uXXXX` escape and lets whitespace stand
between tokens, which changes both the bytes and where they fall in base64's 3-byte groups. A depth-first
search picks, character by character, a spelling that keeps every group clean. The JSON means the same
claims: any JWT library decodes it as usual.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
_BAD = frozenset((62, 63))


def _clean(group: bytes) -> bool:
    """No sextet 62 or 63 in these 1 to 3 bytes' base64 (zero bits pad a short group, as encoding does)."""
    bits = int.from_bytes(group.ljust(3, b"\0"), "big")
    count = len(group) + 1
    return all(((bits >> (18 - 6 * i)) & 63) not in _BAD for i in range(count))


def _spellings(value: Any) -> list[list[bytes]]:
    """The JSON of a claims object, unit by unit, each with the ways it may be written."""
    units: list[list[bytes]] = []
    _spell(value, units)
    return units


def _spell(value: Any, units: list[list[bytes]]) -> None:
    def token(text: str) -> None:
        units.append([b + text.encode() for b in (b"", b" ", b"  ")])

    if isinstance(value, dict):
        token("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                token(",")
            _spell_string(str(key), units)
            token(":")
            _spell(item, units)
        token("}")
    elif isinstance(value, list):
        token("[")
        for i, item in enumerate(value):
            if i:
                token(",")
            _spell(item, units)
        token("]")
    elif isinstance(value, str):
        _spell_string(value, units)
    else:  # numbers, true, false, null: as json writes them, after optional spaces
        token(json.dumps(value))


def _spell_string(text: str, units: list[list[bytes]]) -> None:
    units.append([b'"', b' "', b'  "'])
    for ch in text:
        code = ord(ch)
        if code > 0xFFFF:
            high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
            escapes = [f"\\u{high:04x}\\u{low:04x}", f"\\u{high:04X}\\u{low:04X}"]
        else:
            escapes = [f"\\u{code:04x}", f"\\u{code:04X}"]
        units.append(list(dict.fromkeys([json.dumps(ch, ensure_ascii=False)[1:-1].encode(),
                                         *(e.encode() for e in escapes)])))
    units.append([b'"'])


def clean_payload(claims: dict[str, Any]) -> bytes:
    """The claims as JSON whose base64 has neither `-` nor `_` (nor `+`, `/`)."""
    options = _spellings(claims)
    failed: set[tuple[int, bytes]] = set()  # (character, bytes not yet in a whole group) known to lead nowhere
    # Depth-first, without recursion (a long user name would be deep): per character, the spelling tried and
    # the bytes left over before it.
    chosen: list[tuple[int, bytes]] = []
    index, pending, start = 0, b"", 0
    while index < len(options):
        for k in range(start, len(options[index])):
            data = pending + options[index][k]
            cut = len(data) - len(data) % 3
            if (index + 1, data[cut:]) not in failed and all(_clean(data[i:i + 3]) for i in range(0, cut, 3)) \
                    and (index + 1 < len(options) or _clean(data[cut:]) or not data[cut:]):
                chosen.append((k, pending))
                index, pending, start = index + 1, data[cut:], 0
                break
        else:
            failed.add((index, pending))
            if not chosen:
                raise ValueError("no spelling of these claims has a clean base64 encoding")
            k, pending = chosen.pop()
            index, start = index - 1, k + 1
    return b"".join(options[i][k] for i, (k, _) in enumerate(chosen))


def encode_hs256(claims: dict[str, Any], key: bytes) -> str:
    """A JWT (HS256) of the claims whose payload the v3-era client decodes."""
    payload = base64.urlsafe_b64encode(clean_payload(claims)).rstrip(b"=")
    signing_input = _HEADER + b"." + payload
    signature = base64.urlsafe_b64encode(hmac.new(key, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()
