"""Data: the time-series log of changed fields (SQLite, in the io process) and its queries."""
