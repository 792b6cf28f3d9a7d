"""The uvicorn factory of the grid-in-a-box's DiracX server.

It is DiracX's own ``diracx.routers.factory.create_app``, with one change when
``DIRACX_BRIDGE_MOCK_OSDB=1``: the JobParametersDB uses diracx-testing's SQLite mock (created
at start-up), the same substitution ``diracx.testing.routers:create_app`` makes. That factory
is not used as is because it also runs ``init-sql`` on every database at start-up, which fails
on the job databases the grid shares with DIRAC (their schema is DIRAC's own).

**Test grid only**: when ``DIRACX_BRIDGE_MAX_SANDBOX_SIZE_BYTES`` is set, DiracX's sandbox size
limit (``MAX_SANDBOX_SIZE_BYTES``, 100 MiB, a module constant of ``diracx.logic.jobs.sandboxes``
and ``diracx.routers.jobs.sandboxes`` with no setting) becomes that many bytes, so that the
1 GiB sandbox test and bench can run. Unset (the default), DiracX is unchanged. A production
DiracX has no such option; nothing outside the grid-in-a-box may rely on it.

When ``DIRACX_BRIDGE_ACCESS_LOG`` names a file, the app is wrapped in the grid's access log
(:mod:`.access_log`), which tests read to prove which requests reached DiracX.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from diracx_bridge.testing.access_log import wrap_from_environment


@asynccontextmanager
async def _create_mock_osdb() -> AsyncIterator[None]:
    from diracx.db.__main__ import init_os

    await init_os()
    yield


#: See the module's docstring (also :data:`.diracx_server.MAX_SANDBOX_SIZE_ENV`).
MAX_SANDBOX_SIZE_ENV = "DIRACX_BRIDGE_MAX_SANDBOX_SIZE_BYTES"


def _raise_sandbox_limit() -> None:
    """Test grid only: replace DiracX's hard-coded 100 MiB sandbox limit (read at call time)."""
    limit = os.environ.get(MAX_SANDBOX_SIZE_ENV)
    if not limit:
        return
    import diracx.logic.jobs.sandboxes as logic
    import diracx.routers.jobs.sandboxes as routes

    logic.MAX_SANDBOX_SIZE_BYTES = routes.MAX_SANDBOX_SIZE_BYTES = int(limit)


def create_app() -> Any:
    from diracx.routers.factory import create_app as diracx_create_app

    _raise_sandbox_limit()

    mock_osdb = os.environ.get("DIRACX_BRIDGE_MOCK_OSDB") == "1"
    if mock_osdb:
        from diracx.db.os.utils import BaseOSDB
        from diracx.testing.mock_osdb import fake_available_osdb_implementations

        BaseOSDB.available_implementations = partial(  # type: ignore[method-assign]
            fake_available_osdb_implementations,
            real_available_implementations=BaseOSDB.available_implementations,
        )
    app = diracx_create_app()
    if mock_osdb:
        app.lifetime_functions.append(_create_mock_osdb)
    return wrap_from_environment(app)
