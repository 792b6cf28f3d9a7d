"""The caller's side of shadow mode: the legacy client, with a sample of its reads also sent to DiracX.

:func:`diracx_bridge.routing.select` hands DIRAC this wrapper instead of the bare legacy client
when the service is shadowed for the caller. A call goes to the legacy service exactly as without
the bridge and its answer is returned unchanged; only a method the adapter declares a read
(``Adapter.READS``) is sampled, and a sampled call costs the caller a ``pickle.dumps`` of its
arguments and answer and a non-blocking queue put (about 60 µs for a 200-job answer; the whole
call's cost is measured in bench/shadow_bench.py). Writes are never
shadowed. Nothing here raises into DIRAC.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from diracx_bridge.adapters import Adapter, Route
from diracx_bridge.log import logger
from diracx_bridge.settings import ShadowSettings
from diracx_bridge.shadow._worker import Sample, freeze, sampled, shadow, shadow_route


class ShadowedClient:
    """Stands where DIRAC's legacy ``RPCClient`` would: every attribute is the legacy client's."""

    def __init__(
        self,
        legacy: Any,
        *,
        adapter: type[Adapter],
        route: Route,
        url: str,
        client_kwargs: dict[str, Any],
        rate: float,
        settings: ShadowSettings,
    ) -> None:
        self._legacy = legacy
        self._adapter = adapter
        self._route = shadow_route(route)
        self._url = url
        self._client_kwargs = dict(client_kwargs)
        self._rate = rate
        self._settings = settings

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._legacy, name)
        if name not in self._adapter.READS or not callable(attribute):
            return attribute
        return self._shadowed(name, attribute)

    def _shadowed(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def shadowed_call(*args: Any) -> Any:
            started = time.perf_counter()
            answer = call(*args)
            elapsed = time.perf_counter() - started
            try:
                # Sampled here, before the worker is even looked up: an unsampled call costs one random().
                if isinstance(answer, dict) and "OK" in answer and sampled(self._rate):
                    shadow(self._settings).offer(lambda: self._sample(name, args, answer, elapsed))
            except Exception as exc:  # noqa: BLE001 - shadow mode must never touch the caller's answer
                logger().debug("shadow mode skipped a call", repr(exc))
            return answer

        return shadowed_call

    def _sample(self, method: str, args: tuple[Any, ...], answer: dict[str, Any], seconds: float) -> Sample:
        return Sample(
            adapter=self._adapter,
            route=self._route,
            url=self._url,
            client_kwargs=self._client_kwargs,
            method=method,
            frozen=freeze(args, answer),
            legacy_seconds=seconds,
        )
