"""How a site reaches the aggregator: one interface (``SiteLink``), two implementations.

``GrpcLink`` is the product's: the wire protocol over a gRPC channel, with or without mutual
TLS. ``InProcessLink`` calls the same coordinator in the same process, through the same
messages, for ``fedkube.simulation``; it needs no sockets. The trainer knows only the
interface, so both run the very same site code.
"""

from fedkube.transport.link import SiteLink

__all__ = ["SiteLink"]
