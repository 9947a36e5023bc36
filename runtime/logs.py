"""Process logging: one line per event on stderr, readable by people and by journald."""

from __future__ import annotations

import logging
import os
import sys

# syslog priorities (RFC 5424), understood by journald as a "<N>" line prefix.
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        # journald stamps time and unit itself; multi-line tracebacks keep the prefix.
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def every_power_of_ten(count: int) -> bool:
    """True for the 1st, 10th, 100th, ... occurrence: a fault repeating every tick stays
    visible without flooding the journal."""
    while count % 10 == 0:
        count //= 10
    return count == 1


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr; with journald on the other end, as ``<priority>`` prefixed lines."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
