"""The app's widgets, one job each (each posts its own messages, defined beside it)."""
