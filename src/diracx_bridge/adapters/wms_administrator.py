"""WMSAdministrator: the legacy service's surface, with nothing DiracX can serve.

Its one method, ``getJobPilotOutput(jobID)``, concatenates the standard output and error of every
pilot that ran the job, which DIRAC keeps in ``PilotAgentsDB.PilotOutput`` (or fetches from the
CE). DiracX can say which pilots ran a job (its pilot search), but has no route to their
output, so the method goes to the legacy service when
``/DiracX/Bridge/WorkloadManagement/WMSAdministrator/LegacyFallback`` allows it, and is refused
with that reason otherwise. The adapter still gives what the legacy service gives before any
work: its ``Authorization`` rules (``Unauthorized query``), DISET's type check, ``Unknown method``
for a name it does not have; ``ping`` is DiracX's health probe, as for every adapter.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, ClassVar

from diracx_bridge import capabilities
from diracx_bridge.adapters._legacy_auth import LegacyAuthorization
from diracx_bridge.identity import Caller, CallerKind


class WMSAdministratorAdapter(LegacyAuthorization):
    SERVICE = "WorkloadManagement/WMSAdministrator"
    #: The handler's ``types_<method>`` lists (WMSAdministratorHandler).
    TYPES: ClassVar[dict[str, list[Any]]] = {"getJobPilotOutput": [[str, int]]}
    READS = frozenset({"getJobPilotOutput"})
    NOT_SERVED: ClassVar[dict[str, str]] = {
        "getJobPilotOutput": "it has no route to pilot output (DIRAC's PilotOutput table or the CEs)",
    }

    @classmethod
    def caller_notes(cls, caller: Caller, properties: Collection[str]) -> list[str]:
        if caller.kind is not CallerKind.PROXY:
            return []
        return [f"getJobPilotOutput: {capabilities.NAME} has no pilot output; the legacy service answers it "
                "with LegacyFallback, else it is refused"]  # fmt: skip
