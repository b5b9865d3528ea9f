"""`make demo` checks its ports before starting anything: a port another process listens on is named, with the
setting that moves it. A real listening socket on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from wml_localplatform import demo


def test_a_taken_port_is_named_with_how_to_free_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(demo.PortTaken, match=f"port {port} on 127.0.0.1 is taken.*WSO_DEMO_WML_PORT"):
            demo.check_port_free(port)
