"""master_server: a control plane for a fleet of remote Linux devices."""

__version__ = "0.1.0"
