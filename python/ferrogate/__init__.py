"""ferrogate: serve a Python ASGI application in production.

Everything runs in Rust; this package only exposes the command (`ferrogate`)
and the exception apps may see when a client goes away mid-response.
"""

from ferrogate._ferrogate import ClientDisconnected, __version__

__all__ = ["ClientDisconnected", "__version__"]
