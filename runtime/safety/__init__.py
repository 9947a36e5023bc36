"""Safety: the one safe-state path, the e-stop latch, watchdogs and the audit log."""
