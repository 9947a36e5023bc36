"""GPIO lines: the e-stop's inputs (and outputs), and the ``gpio`` driver's points, on a
kernel chip or a simulated one.

Sections embed ``GpioLine`` entries (``config``), e.g. the e-stop's::

    estop:
      inputs:
        - {chip: gpiochip0, offset: 17, active_low: true, bias: pull_up, debounce_ms: 5}
        - {chip: sim, offset: 0}     # the simulated chip: `edgeloop estop press`

The ``gpio`` section (``plugin``) maps lines to ``bool`` World fields through the field
bridge, as every driver's points are; ``device`` keeps one device's lines, in the control
process. ``claims`` refuses a line that two sections name.

``lines`` opens them (``open_input``, ``open_output``) behind one interface: an input's
``fileno`` is readable while edges are pending, for the control loop's wake sources.
``chardev`` is the kernel backend (libgpiod v2, imported only for a real chip); ``sim``
the simulated chip, reached from outside through a socket in the state directory
(``sim_client``, ``edgeloop gpio get|set``); ``estop_switch`` presses and releases the
config's e-stop inputs on it (``edgeloop estop press|release``).
"""

from edgeloop.drivers.gpio.config import GpioLine
from edgeloop.drivers.gpio.lines import GpioError, InputLine, OutputLine, open_input, open_output

__all__ = ["GpioError", "GpioLine", "InputLine", "OutputLine", "open_input", "open_output"]
