"""Field-bus drivers: one module per bus, each with its simulator."""
