"""Serial devices: ASCII lines or binary frames from a serial port into device points.

Config section ``serial``::

    serial:
      devices:
        - name: sensor1
          port: /dev/serial/by-id/usb-FTDI_FT232R-if00-port0
          baudrate: 9600
          key_value: {separator: "=", pair_separator: ","}   # or regex: / csv:
          stream: {timeout_ms: 2000}                          # or poll: {request: ...}
          points:
            - {key: T, entity: room1, component: Climate, field: temperature, unit: degC}
            - {key: S, entity: room1, component: Climate, field: setpoint,
               direction: both, write: "SET {value:.2f}\\r\\n"}
        - name: meter1
          port: /dev/ttyUSB1
          mode: binary
          frame:
            start: "AA"
            checksum: {kind: crc16-modbus}
            fields: [{name: power, offset: 0, type: float32}]
          poll: {request: "AA 01 01 C1 E0", period_ms: 500, timeout_ms: 200}
          points: [{key: power, entity: meter1, component: Meter, field: power}]

A point's ``key`` names where its value is: a named group of ``regex``, a key of
``key_value``, a column index of ``csv``, a field of a binary ``frame``. A line (or
frame) is taken whole: one that does not hold every key counts as ``garbage`` and
changes no value (lines matching ``ignore`` and empty ones are passed over); a key whose
text is not a value of the point's type makes that point BAD. Output points (ASCII
only) send their ``write`` template, filled with the raw value, when the control loop
changes them, and again after the port is reopened; what the port cannot take at once
waits (``add_writer``) and goes out whole.

``stream`` devices talk on their own; when nothing good arrives for ``timeout_ms`` their
values turn STALE and a ``timeout`` is counted. ``poll`` devices are sent ``request``
every ``period_ms``; the first line or frame back is the answer.

The port is read on the event loop (``add_reader`` on the descriptor pyserial opened
non-blocking). When it fails (a USB adapter pulled: the read fails, the path is gone)
the device goes offline, its values STALE, and the path is opened again with backoff
until it is back, as udev's ``/dev/serial/by-id`` links come back.
"""
