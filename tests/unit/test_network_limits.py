"""The network section's limits: what the config allows is what the appliance carries."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeloop.config import ConfigError, parse_config_text
from edgeloop.net import protocol
from edgeloop.net.plugin import SECTION


def test_max_frame_bytes_above_what_the_io_channel_carries_is_a_config_error(
    tmp_path: Path,
) -> None:
    text = f"network:\n  tcp: {{max_frame_bytes: {protocol.MAX_FRAME_BYTES + 1}}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text, tmp_path / "config.yaml", [SECTION])
    problem = str(caught.value.problems[0])
    assert "network.tcp.max_frame_bytes" in problem
    assert "io channel" in problem


def test_the_default_frame_limit_is_the_largest_the_io_channel_carries(tmp_path: Path) -> None:
    config = parse_config_text("network: {}\n", tmp_path / "config.yaml", [SECTION])
    network = config.sections["network"]
    assert network.tcp.max_frame_bytes == protocol.MAX_FRAME_BYTES  # type: ignore[attr-defined]
    assert network.websocket.max_frame_bytes == protocol.MAX_FRAME_BYTES  # type: ignore[attr-defined]
