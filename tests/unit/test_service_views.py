"""How position and lag render (EXT_POSITION, EXT_LAG): from memory only, live first, then as stored."""

from __future__ import annotations

from wml_server.db import DeploymentRecord
from wml_server.engine.state import StreamState
from wml_server.models.sentiment import SentimentModel
from wml_server.views import render_deployment

MODEL = SentimentModel()


def _record(position: dict[str, object] | None = None, failure: bool = False) -> DeploymentRecord:
    details = {"failure": {"errors": [{"code": "kafka_error", "message": "broke"}]}} if failure else None
    return DeploymentRecord("d", "i", MODEL.id, {"type": "stream", "name": "n"}, None, "STOPPED", details,
                            "STOPPED", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", position)


def test_nothing_known_renders_no_status_details() -> None:
    assert render_deployment("http://x", _record(), MODEL).entity.status_details is None
    accept_only = StreamState("RUNNING")  # an accept-only engine knows no position and no lag
    assert render_deployment("http://x", _record(), MODEL, accept_only).entity.status_details is None


def test_the_live_position_and_lag_win_while_running() -> None:
    live = StreamState("RUNNING", position=("tweets", {"0": 9}), lag=4)
    details = render_deployment("http://x", _record({"topic": "tweets", "offsets": {"0": 2}}), MODEL,
                                live).entity.status_details
    assert details is not None
    assert details.position is not None
    assert details.position.offsets == {"0": 9}
    assert details.lag == 4


def test_a_stopped_stream_shows_its_stored_position_no_lag_and_keeps_its_failure() -> None:
    stopped = StreamState("STOPPED", lag=4)
    details = render_deployment("http://x", _record({"topic": "tweets", "offsets": {"0": 2}}, failure=True), MODEL,
                                stopped).entity.status_details
    assert details is not None
    assert details.position is not None
    assert details.position.model_dump() == {"topic": "tweets", "offsets": {"0": 2}}
    assert details.lag is None
    assert details.failure is not None
    assert details.failure.errors[0].code == "kafka_error"
