"""Keep the grid-in-a-box's DIRAC servers on loopback.

DIRAC's DISET services bind every address (``("", port)``) and have no bind-address option.
This file is put on the ``PYTHONPATH`` of the grid's server processes only (never of clients or
of the bridge), where Python imports it at start-up; it rewrites wildcard binds to loopback.
"""

import contextlib
import socket

_LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
_WILDCARDS = {"", "0.0.0.0", "::"}  # noqa: S104 - these are what we rewrite away
_bind = socket.socket.bind


def _loopback_bind(self, address):  # noqa: ANN001, ANN202 - same signature as socket.bind
    if isinstance(address, tuple) and address and address[0] in _WILDCARDS and self.family in _LOOPBACK:
        if self.family == socket.AF_INET6:
            # A dual-stack socket: v4-mapped loopback keeps IPv4 clients (localhost) working.
            with contextlib.suppress(OSError):
                self.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            address = ("::ffff:127.0.0.1", *address[1:])
        else:
            address = (_LOOPBACK[self.family], *address[1:])
    return _bind(self, address)


socket.socket.bind = _loopback_bind
