"""The twin-job harness itself: equal writes give equal states, and a real difference is caught.

Every write parity test relies on :mod:`twins`; a comparison that could not fail would prove nothing.
"""

from __future__ import annotations

import pytest
from twins import JSU, Databases, assert_same_state, make_twins

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dbs(grid_session):
    databases = Databases(grid_session.grid)
    yield databases
    databases.close()


def test_the_same_legacy_write_on_twins_gives_the_same_state(gs, dbs):
    user, admin = gs.worker("ciuser", "civo_user"), gs.worker("ciuser", "civo_admin")
    first, second = make_twins(user, admin, to=("Running", "Application", "Running step 1"))
    for job in (first, second):
        res = user.call(JSU, "setJobParameter", job, "twin-param", "42")
        assert res["OK"], res
        res = user.call(JSU, "sendHeartBeat", job, {"LoadAverage": 1.5}, {})
        assert res["OK"], res
    a, b = dbs.state(first), dbs.state(second)
    assert a.job["Status"] == "Running" and a.parameters.get("twin-param") == "42", a
    assert a.heartbeats and a.logging and not a.disorder
    assert_same_state(a, b)


def test_a_difference_between_twins_is_reported(gs, dbs):
    user, admin = gs.worker("ciuser", "civo_user"), gs.worker("ciuser", "civo_admin")
    first, second = make_twins(user, admin, to=("Running", "Application", "Running step 1"))
    res = user.call(JSU, "setJobApplicationStatus", second, "Running step 2", "twins")
    assert res["OK"], res
    with pytest.raises(AssertionError) as caught:
        assert_same_state(dbs.state(first), dbs.state(second))
    assert "Running step 2" in str(caught.value) and "logging" in str(caught.value)
    # ...and ignoring what differs makes them equal again, without changing the states compared.
    a, b = dbs.state(first), dbs.state(second)
    assert_same_state(a, b, ignore=["logging", "job.ApplicationStatus"])
    assert a.job["ApplicationStatus"] == "Running step 1" and b.job["ApplicationStatus"] == "Running step 2"
