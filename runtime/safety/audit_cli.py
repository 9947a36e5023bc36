"""``edgeloop audit verify|tail``: check an audit log's chain, or read its last entries."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeloop.config import load_config_or_report
from edgeloop.safety.audit_chain import FILE_NAME, last_lines, verify

EXIT_OK = 0
EXIT_BROKEN = 1
EXIT_BAD_CONFIG = 2
TAIL_DEFAULT = 20
# What tail shows first on each line; the caller's fields follow as key=value.
_LEADING = ("seq", "time", "event")
_HIDDEN = frozenset({*_LEADING, "prev", "hash"})


def add_audit_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], default_config: Path
) -> None:
    """The ``audit`` command and its two subcommands, under ``commands`` (the
    subparsers of the ``edgeloop`` parser)."""
    audit = commands.add_parser("audit", help="verify or read the audit log")
    actions = audit.add_subparsers(required=True, metavar="ACTION")
    check = actions.add_parser(
        "verify", help="check the hash chain; exit 1 naming the first bad entry"
    )
    _add_source(check, default_config)
    check.set_defaults(command=_verify)
    tail = actions.add_parser("tail", help="print the last entries, one a line")
    _add_source(tail, default_config)
    tail.add_argument(
        "-n", type=int, default=TAIL_DEFAULT, metavar="N", help="how many (default: %(default)s)"
    )
    tail.set_defaults(command=_tail)


def _add_source(parser: argparse.ArgumentParser, default_config: Path) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "-c",
        "--config",
        type=Path,
        default=default_config,
        help=f"the log in this config's runtime.state_dir (default: {default_config})",
    )
    source.add_argument("--file", type=Path, metavar="PATH", help="this audit file")


def _log_path(args: argparse.Namespace) -> Path | None:
    if args.file is not None:
        path: Path = args.file
        return path
    config = load_config_or_report(args.config)
    return None if config is None else config.runtime.state_dir / FILE_NAME


def _verify(args: argparse.Namespace) -> int:
    path = _log_path(args)
    if path is None:
        return EXIT_BAD_CONFIG
    if not path.is_file():
        print(f"{path}: no audit log here", file=sys.stderr)
        return EXIT_BROKEN
    result = verify(path)
    if not result.ok:
        seq = "" if result.seq is None else f" (seq {result.seq})"
        print(
            f"{path}:{result.line}{seq}: {result.reason}; "
            f"the {result.entries} entries before it verify",
            file=sys.stderr,
        )
        return EXIT_BROKEN
    head = "empty" if result.last_seq is None else f"head seq {result.last_seq} {result.last_hash}"
    print(f"{path}: ok, {result.entries} entries, {head}")
    return EXIT_OK


def _tail(args: argparse.Namespace) -> int:
    path = _log_path(args)
    if path is None:
        return EXIT_BAD_CONFIG
    if not path.is_file():
        print(f"{path}: no audit log here", file=sys.stderr)
        return EXIT_BROKEN
    for line in last_lines(path, args.n):
        print(readable(line))
    return EXIT_OK


def readable(line: bytes) -> str:
    """One entry as ``time #seq event key=value ...``; a line that is no entry as is."""
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        return f"(not an entry) {line.decode(errors='replace')}"
    fields = " ".join(
        f"{key}={_value(value)}" for key, value in sorted(entry.items()) if key not in _HIDDEN
    )
    return f"{entry.get('time', '?')} #{entry.get('seq', '?')} {entry.get('event', '?')} {fields}"


def _value(value: object) -> str:
    if isinstance(value, str) and value and not any(c in value for c in " =\"'\n"):
        return value
    return json.dumps(value)
