"""Simulated plants and devices for the demo, tests and commissioning without hardware."""
