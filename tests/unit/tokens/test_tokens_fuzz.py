"""Fuzzing the DIRACX block reader and writer with mutations of a real proxy.

Whatever the file holds, reading gives the token or a token-file error, and writing either
refuses (file untouched) or leaves exactly one block with every byte outside the blocks kept.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokens_test_helpers import access, refresh

from diracx_bridge.errors import TokenFileError
from diracx_bridge.tokens import PEM_BEGIN, PEM_END, DiracxToken, decode_block, encode_block, read_token, write_token
from diracx_bridge.tokens._format import join, split

TOKEN = DiracxToken(access(), refresh(), int(time.time()) + 1000)
NEW = DiracxToken(access(), refresh(), int(time.time()) + 2000)
#: Pieces a damaged or hostile proxy is made of: markers, base64, JSON, odd bytes, newlines.
PIECES = st.sampled_from(
    [PEM_BEGIN, PEM_END, "-----BEGIN CERTIFICATE-----", "-----END RSA PRIVATE KEY-----", "-----BEGIN ", "\n",
     "\r\n", "eyJhY2Nlc3NfdG9rZW4i", "[" * 64, '{"expires_on": 1e400}', "====", "\x00", "\udcff", " ", "Proc-Type: 4"]
)  # fmt: skip
#: Bytes as the store sees them (ASCII, other bytes as surrogates): whatever a file may hold.
BYTES = st.binary(max_size=20).map(lambda raw: raw.decode("ascii", "surrogateescape"))
TEXT = st.lists(st.one_of(PIECES, BYTES), max_size=6).map("".join)


@st.composite
def mutated(draw: st.DrawFn, original: str) -> str:
    """The proxy with a few edits: insertions, deletions, duplications, truncation."""
    text = original
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "duplicate", "truncate"]))
        if kind == "insert":
            text = text[:at] + draw(TEXT) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 200)) :]
        elif kind == "duplicate":
            end = min(len(text), at + draw(st.integers(1, 2000)))
            text = text[:end] + text[at:end] + text[end:]
        else:
            text = text[:at]
    return text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)
PAYLOADS = st.one_of(
    st.binary(max_size=100),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(["access_token", "refresh_token", "expires_on"]), JSON_VALUES).map(
        lambda value: json.dumps(value).encode()
    ),
    st.sampled_from([b"[" * 5000 + b"]" * 5000, b'{"expires_on": 1e400}', b'{"access_token": "\\ud800"}']),
)


def block_of(payload: bytes) -> str:
    """A well-formed DIRACX block around any payload: the decoder, not the PEM layer, must cope."""
    data = base64.b64encode(payload).decode()
    return "\n".join([PEM_BEGIN, *(data[i : i + 64] for i in range(0, len(data), 64)), PEM_END]) + "\n"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
    )


def test_reading_gives_the_token_or_a_token_file_error(proxy_pem: str) -> None:
    original = proxy_pem + encode_block(TOKEN)

    @fuzz_settings(300)
    @given(st.one_of(mutated(original), PAYLOADS.map(lambda payload: proxy_pem + block_of(payload))))
    def check(text: str) -> None:
        try:
            token = decode_block(text, "/fuzzed")
        except TokenFileError:
            return
        assert isinstance(token, DiracxToken)

    check()


def test_writing_refuses_or_keeps_every_byte_outside_one_block(proxy_pem: str) -> None:
    original = proxy_pem + encode_block(TOKEN)
    directory = Path(tempfile.mkdtemp(prefix="tokens-fuzz-"))
    proxy = directory / "x509up_fuzz"

    @fuzz_settings(100)
    @given(mutated(original))
    def check(text: str) -> None:
        data = text.encode("ascii", "surrogateescape")
        fd = os.open(proxy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            write_token(proxy, NEW, timeout=5)
        except TokenFileError:
            assert proxy.read_bytes() == data  # refused: untouched
            return
        written = proxy.read_bytes().decode("ascii", "surrogateescape")
        assert written == join(split(text, None).rest, encode_block(NEW))  # the rest, byte for byte
        assert written.count(PEM_BEGIN) == written.count(PEM_END) == 1
        assert read_token(proxy) == NEW
        assert sorted(p.name for p in directory.iterdir()) == [proxy.name]

    try:
        check()
    finally:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()
