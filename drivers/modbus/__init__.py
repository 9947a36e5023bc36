"""Modbus: a client driver (config section ``modbus``) and a server (``modbus_server``).

The client: ``lines`` are TCP addresses or RTU serial ports with the devices (unit ids)
reached through them; each device has poll groups and points (``config``). Per device
and poll group the points of one table are read in the fewest requests (``plan``), each
block decoded by a plan made once (``codec``), by a task per connection (``io``).
``plugin`` is the section; ``sim`` a simulated PLC for tests and the demo.

The server (``server``) serves chosen World fields to a SCADA, an HMI or a stock Modbus
tool.
"""
