"""The demo's output: step headers with the time since the start, everything else indented under them."""

from __future__ import annotations

import contextlib
import time


class Console:
    """Step headers with the time since the start; everything else indented under them."""

    def __init__(self, *, color: bool, interactive: bool) -> None:
        self.color = color
        self.interactive = interactive
        self.started = time.monotonic()

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def step(self, title: str) -> None:
        line = f"[{self.elapsed()}] {title}"
        print("\n" + (f"\033[1m{line}\033[0m" if self.color else line), flush=True)

    def say(self, text: str = "") -> None:
        for line in text.splitlines() or [""]:
            print(f"    {line}".rstrip(), flush=True)

    def command(self, text: str) -> None:
        self.say(f"$ {text}")

    def pause(self, what: str) -> None:
        if self.interactive:
            with contextlib.suppress(EOFError):
                input(f"    -- press Enter to {what} -- ")
