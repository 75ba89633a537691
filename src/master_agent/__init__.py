"""The master_server client agent: runs on a device and speaks only the HTTP API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("master-server")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
