"""The marker a deployment's description carries: which resource made it, and from what spec."""

from __future__ import annotations

import re

from wml_api.models import Deployment
from wml_operator.wml import Listing, built_from, marker

# What operators from before the spec hash read: they must still find their deployments after an upgrade is
# rolled back.
BEFORE_THE_SPEC_HASH = re.compile(r"\(managed by wml-stream-operator, uid (?P<uid>[^)\s]+)\)")


def deployment(guid: str, description: str) -> Deployment:
    return Deployment.model_validate({"metadata": {"guid": guid, "url": f"http://x/{guid}"},
                                      "entity": {"type": "stream", "name": guid, "status": "RUNNING",
                                                 "description": description}})


def test_the_uid_and_the_spec_hash_are_read_back() -> None:
    made = deployment("d1", f"StreamingDeployment ns/a {marker('uid-a', '0123456789abcdef')}")
    assert built_from(made) == "0123456789abcdef"
    assert [d.id for d in Listing.of(0.0, {"d1": made}).owned("uid-a")] == ["d1"]


def test_a_marker_from_before_the_spec_hash_has_none() -> None:
    old = deployment("d0", "StreamingDeployment ns/a (managed by wml-stream-operator, uid uid-a)")
    assert built_from(old) is None
    assert [d.id for d in Listing.of(0.0, {"d0": old}).owned("uid-a")] == ["d0"]


def test_an_operator_from_before_the_spec_hash_still_reads_the_uid() -> None:
    found = BEFORE_THE_SPEC_HASH.search(f"text {marker('uid-a', '0123456789abcdef')}")
    assert found is not None
    assert found.group("uid") == "uid-a"


def test_no_marker_no_owner() -> None:
    plain = deployment("d2", "made by hand (spec 0123456789abcdef)")
    assert built_from(plain) is None
    assert Listing.of(0.0, {"d2": plain}).owned("uid-a") == []
