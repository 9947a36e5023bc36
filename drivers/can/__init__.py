"""CAN devices: frames from python-can decoded through cantools into device points.

Config section ``can``::

    can:
      bus: {interface: socketcan, channel: can0}   # or interfaces: [{name: ..., ...}, ...]
      devices:
        - name: drive1
          dbc: drive.dbc            # or messages: [{name, id, length, period_ms, signals}]
          points:
            - {message: DriveStatus, signal: Speed, entity: drive1, component: Drive,
               field: speed, unit: rpm}
            - {message: DriveCommand, signal: SpeedSetpoint, entity: drive1,
               component: Drive, field: speed_setpoint, direction: output}
          tx: [{message: DriveCommand, period_ms: 50, on_change: true}]

A DBC and inline messages give the same thing, a cantools ``Database``, so one decoder
serves both. A signal's own scale and offset come from its definition; a point's
``scale``/``offset`` apply on top.

Receive: each frame id a device reads maps to its cantools message and point indices
(built once); a frame is decoded and sent as one group of values. A message not seen
for ``timeout_periods`` x its period (``period_ms``, the DBC's cycle time, or ``rx:``)
turns its points STALE and counts a ``timeout``; a frame of the wrong length counts as
``garbage`` and marks its points BAD.

Transmit: each ``tx`` message goes out every ``period_ms`` with the values the control
loop last wrote (the signals' initial values before that), and at once on a write when
``on_change`` is set; a write while the bus is closed or bus-off goes out when it is
back. A period is at least 1 ms.

Bus state: error-passive and bus-off come from SocketCAN's error frames (or
``bus.state`` where an interface reports one) and are counted as ``bus`` errors of every
device on that bus; a bus that fails (interface down, adapter unplugged) is reopened
with backoff.
"""
