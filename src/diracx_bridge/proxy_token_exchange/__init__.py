"""DiracX tokens in proxy files: the DIRACX block, the legacy exchange, refresh and write-back.

:mod:`.bundle` is the only module that reads or writes the DIRACX block of a proxy file; its
public names are re-exported here. Importing this package imports neither DIRAC nor diracx.
"""

from __future__ import annotations

from .bundle import (
    BundleError,
    BundleLockError,
    BundleLockTimeout,
    DiracxToken,
    MalformedTokenBlock,
    NotAProxyFile,
    NoTokenBlock,
    ProxyFileNotFound,
    UnsafeBundleFile,
    decode_block,
    encode_block,
    lock_path_for,
    locked,
    read_token,
    remove_token,
    update_token,
    write_token,
)

__all__ = [
    "BundleError",
    "BundleLockError",
    "BundleLockTimeout",
    "DiracxToken",
    "MalformedTokenBlock",
    "NoTokenBlock",
    "NotAProxyFile",
    "ProxyFileNotFound",
    "UnsafeBundleFile",
    "decode_block",
    "encode_block",
    "lock_path_for",
    "locked",
    "read_token",
    "remove_token",
    "update_token",
    "write_token",
]
