"""``edgeloop replay FILE``: replay a recording and say whether it reproduced."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from edgeloop.data.recording import RecordingError
from edgeloop.data.replay import replay

EXIT_IDENTICAL = 0
EXIT_DIVERGED = 1
EXIT_UNREADABLE = 2


def add_replay_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "replay", help="replay a recording (runtime.record) and check its state hashes"
    )
    parser.add_argument("file", type=Path)
    parser.set_defaults(command=_replay)


def _replay(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="edgeloop-replay-") as scratch:
        try:
            result = replay(args.file, Path(scratch))
        except (RecordingError, OSError, ValueError) as error:
            print(f"edgeloop replay: {args.file}: {error}", file=sys.stderr)
            return EXIT_UNREADABLE
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    divergence = result.divergence
    if divergence is not None:
        print(
            f"diverged at tick {divergence.tick} (after {result.ticks} ticks replayed): "
            f"state hash {divergence.replayed}, recorded {divergence.recorded}; "
            f"components that differ: {', '.join(divergence.components) or '(none listed)'}"
        )
        return EXIT_DIVERGED
    end = result.end or "the recording was cut short (no end)"
    print(
        f"identical: {result.ticks} ticks replayed, {result.hashes_checked} state hashes "
        f"checked (recorded by edgeloop {result.recorded_by}; its end: {end})"
    )
    return EXIT_IDENTICAL
