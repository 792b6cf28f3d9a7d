"""``dirac_cfg.with_options``: extra CS values for a grid that needs them (a benchmark's limits)."""

from __future__ import annotations

import pytest
from diraccfg import CFG

from diracx_bridge.testing import dirac_cfg

CS = """Systems
{
  WorkloadManagement
  {
    Services
    {
      JobManager
      {
        Port = 9132
      }
    }
  }
}
"""


def test_no_options_leave_the_text_as_it_is() -> None:
    assert dirac_cfg.with_options(CS, {}) is CS


def test_an_option_is_set_next_to_the_existing_ones() -> None:
    text = dirac_cfg.with_options(CS, {"/Systems/WorkloadManagement/Services/JobManager/MaxParametricJobs": "1000"})
    cfg = CFG().loadFromBuffer(text)
    assert cfg.getOption("/Systems/WorkloadManagement/Services/JobManager/MaxParametricJobs") == "1000"
    assert cfg.getOption("/Systems/WorkloadManagement/Services/JobManager/Port") == "9132"


def test_missing_sections_are_created_and_values_replaced() -> None:
    text = dirac_cfg.with_options(CS, {"/A/B/C": "x", "/Systems/WorkloadManagement/Services/JobManager/Port": "1"})
    cfg = CFG().loadFromBuffer(text)
    assert cfg.getOption("/A/B/C") == "x"
    assert cfg.getOption("/Systems/WorkloadManagement/Services/JobManager/Port") == "1"


def test_an_option_without_a_section_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a section"):
        dirac_cfg.with_options(CS, {"/Lonely": "1"})
