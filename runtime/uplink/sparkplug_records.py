"""The records between the Sparkplug edge node (io process) and its control side.

- ``sparkplug.write``, io -> control, HIGH, key who sent it (``sparkplug host <id> via
  <broker>``): ``[[metric index or -1, value, "device/metric"], ...]``, the writes of
  one NCMD or DCMD.
- ``sparkplug.status``, io -> control, NORMAL: ``[live, waiting, dropped]`` whenever one
  changes: publishing live, changes in the backlog, changes dropped past its bound.
- ``sparkplug.devices``, control -> io, HIGH: ``[alive, ...]``, one per configured
  device in config order, whenever one changes and after the io process (re)starts: a
  device with ``health`` is alive unless that driver device is offline.
"""

from __future__ import annotations

TOPIC_WRITE = "sparkplug.write"
TOPIC_STATUS = "sparkplug.status"
TOPIC_DEVICES = "sparkplug.devices"
