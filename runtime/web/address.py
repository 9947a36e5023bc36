"""Where a person opens the dashboard of a config: ``http(s)://HOST:PORT/``."""

from __future__ import annotations

from edgeloop.config import Config
from edgeloop.net.plugin import NetworkConfig


def dashboard_url(config: Config) -> str | None:
    """The page's address, or None without a WebSocket listener (no dashboard)."""
    network = config.sections.get("network")
    if not isinstance(network, NetworkConfig) or network.websocket is None:
        return None
    scheme = "https" if network.tls is not None else "http"
    host = network.websocket.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{network.websocket.port}/"
