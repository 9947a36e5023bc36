"""The plugin contract: how drivers, providers and simulators add themselves to an App."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from edgeloop.app import App


@runtime_checkable
class Plugin(Protocol):
    """Adds systems, resources and message types to an App.

    A plugin that owns a config section is built from its validated section model
    (see ``edgeloop.config.ConfigSection``); ``build`` then wires it into the App.
    """

    def build(self, app: App) -> None: ...
