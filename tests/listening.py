"""The ports an appliance says it bound: started on port 0, it reads them from its log,
so nothing can take a port between choosing it and binding it (as with a port chosen
for it in advance)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

# runtime/net/tcp_provider.py and ws_provider.py log these once listening
TCP = re.compile(r"listening for robots and PLCs on [\d.]+:(\d+)")
WEBSOCKET = re.compile(r"serving HTTPS? and /ws on [\d.]+:(\d+)")
DEADLINE_S = 30.0


def logged_port(
    log: Path, line: re.Pattern[str], proc: subprocess.Popen[bytes], deadline_s: float = DEADLINE_S
) -> int:
    """The port in the first ``line`` of ``log`` (the appliance's stderr)."""
    until = time.monotonic() + deadline_s
    while True:
        found = line.search(log.read_text(errors="replace"))
        if found:
            return int(found[1])
        assert proc.poll() is None, f"the appliance exited: {log.read_text()[-2000:]}"
        assert time.monotonic() < until, f"never logged {line.pattern!r}"
        time.sleep(0.05)  # polling a file; the deadline bounds the wait
