"""Control blocks: reusable control algorithms as components plus the systems that run them."""
