"""Running an App against the wall clock."""
