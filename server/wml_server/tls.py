"""A renewed certificate served without a restart: the serving SSLContext loads the certificate and key again when
their files change.

cert-manager renews the certificate of components/wml-server a month before it expires, and the kubelet then
swaps the files of the mounted Secret; uvicorn reads them once, at start. Loading them again into the same
context is enough: every handshake after that presents the new certificate (OpenSSL copies the context's
certificate into each new connection), connections already open keep theirs.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from pathlib import Path

log = logging.getLogger(__name__)


class CertReloader:
    def __init__(self, context: ssl.SSLContext, cert: Path, key: Path, interval: float = 30.0) -> None:
        self.context = context
        self.cert = cert
        self.key = key
        self.interval = interval
        self._seen = self._stamp()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stamp(self) -> tuple[tuple[int, int, int], ...]:
        # stat follows the symlinks of a Secret volume (tls.crt -> ..data/tls.crt): a swap shows a new inode.
        stamps = []
        for path in (self.cert, self.key):
            try:
                st = os.stat(path)
                stamps.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append((0, 0, 0))
        return tuple(stamps)

    def check(self) -> bool:
        """Loads the pair again if either file changed; True when a new pair is now served. A pair that does not
        load (caught between the two writes, or a key that does not match) keeps the one served, and is tried
        again at the next check."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        try:
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.warning("the TLS certificate %s changed but does not load (%s); still serving the previous one",
                        self.cert, exc)
            return False
        self._seen = stamp
        log.info("serving the renewed TLS certificate %s", self.cert)
        return True

    def start(self) -> CertReloader:
        def run() -> None:
            while not self._stop.wait(self.interval):
                self.check()

        self._thread = threading.Thread(target=run, name="tls-reload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
