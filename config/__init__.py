"""Example configurations.

This folder is also the package ``edgeloop.examples`` so that ``edgeloop demo`` finds
``demo.yaml`` in an installed wheel as well as in a source checkout.
"""
