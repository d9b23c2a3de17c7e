"""Bring the loopback interface up in a fresh network namespace, then run a command.

``unshare --net`` gives a child a namespace with no network at all: its loopback interface
is down. A tool that wraps the child and talks to it over TCP on localhost (Nsight
Compute's ``ncu`` and the process it profiles) must share the child's namespace and needs
loopback up, still with no route out. The sandbox then runs::

    unshare --net python -m sandbox._loopback ncu ... python -m sandbox._child ...

(:class:`sandbox._process.Child` with a ``prefix``). Before, ``ncu`` ran outside the
namespace and its target inside, where it could not reach ``ncu``: the likely reason why
every ncu child on the H100 runs of 2026-12-06 and 2026-12-07 was killed at its import
limit (not yet confirmed on a GPU).

Example:
    >>> import struct; len(struct.pack(_IFREQ, b"lo", 0))
    32
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys

_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sH14x"  # struct ifreq: the interface's name, then its flags


def up(name: str = "lo") -> None:
    """Set interface ``name`` up (needs CAP_NET_ADMIN in this namespace: root, or the root
    of a user namespace that owns it). Raises OSError when it cannot."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack(_IFREQ, name.encode(), 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s, _SIOCGIFFLAGS, req))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack(_IFREQ, name.encode(), flags | _IFF_UP))


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m sandbox._loopback COMMAND [ARG ...]", file=sys.stderr)
        return 2
    try:
        up()
    except OSError as e:  # the command still runs; what needs loopback will say so
        print(f"kbench: loopback not brought up in the child's namespace: {e}", file=sys.stderr)
    os.execvp(argv[0], argv)
    return 127  # not reached: execvp replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
