"""Tokens the v3-era Python client can read: their payload decodes with the standard base64 alphabet too."""

from __future__ import annotations

import base64
import json
import random
import string
import uuid

import jwt
import pytest

from wml_server.token_payload import clean_payload, encode_hs256

pytestmark = pytest.mark.unit
KEY = b"k" * 32


def as_the_old_client_reads(token: str) -> object:
    # watson_machine_learning_client/instance.py, _get_expiration_datetime, as it is.
    part = token.split(".")[1]
    return json.loads(base64.b64decode(part + "=" * (len(part) % 4)).decode("utf-8"))


def test_random_claims_read_the_same_by_the_old_client_and_by_a_jwt_library() -> None:
    rng = random.Random(16)  # noqa: S311 - reproducible test data
    alphabet = string.printable + "éü€😀\u0001"
    for i in range(1500):
        claims = {"instanceId": str(uuid.UUID(int=rng.getrandbits(128))), "iss": "wml",
                  "userId": "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))),
                  "iat": 1_700_000_000 + i, "exp": 1_700_000_000 + 7 * i}
        token = encode_hs256(claims, KEY)
        payload = token.split(".")[1]
        assert "-" not in payload
        assert "_" not in payload
        assert as_the_old_client_reads(token) == claims
        assert jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False}) == claims


def test_a_plain_encoding_would_break_the_old_client_for_these_claims() -> None:
    # The reason for the module: a payload encoded the usual way has `-` or `_` for some claims (ASCII letters and
    # digits rarely make the sextets 62 and 63; `~`, `?` and most non-ASCII text often do).
    broken, rng = 0, random.Random(3)  # noqa: S311 - reproducible test data
    for i in range(200):
        name = f"user-{i}-" + "".join(rng.choice("~?é€ab") for _ in range(6))
        claims = {"instanceId": str(uuid.UUID(int=rng.getrandbits(128))), "userId": name, "exp": 1_700_000_000 + i}
        payload = jwt.encode(claims, KEY, algorithm="HS256").split(".")[1]
        broken += "-" in payload or "_" in payload
        assert json.loads(clean_payload(claims)) == claims
    assert broken > 0


def test_a_wrong_key_is_refused() -> None:
    token = encode_hs256({"userId": "a", "exp": 1}, KEY)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, b"x" * 32, algorithms=["HS256"], options={"verify_exp": False})
