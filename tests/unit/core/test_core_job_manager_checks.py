"""``check_submission`` on many jobs: one CS snapshot per call, the same refusals as job-by-job checks.

DIRAC's job description model reads the CS about 220 times per job (its validators call
``_make_model_config``, which builds an ``Operations`` helper each time); the legacy manifest and
job checks read it again per job. ``check_submission`` reads each of those configurations once
per call, and only inside the call, only in the calling thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from core_test_helpers import GROUP, USER, VO

from diracx_bridge import errors
from diracx_bridge.adapters import job_manager
from diracx_bridge.adapters.job_manager import check_submission

MAX_CPU = "/Operations/Defaults/JobDescription/MaxCPUTime"
CHOICES = "/Operations/Defaults/JobDescription/ChoicesJobType"


def parametric(n: int, extra: str = "") -> str:
    return (
        f'[ Executable = "/bin/echo"; Arguments = "%s"; JobName = "p-%n"; {extra} '
        f"Parameters = {n}; ParameterStart = 1; ParameterStep = 1; ]"
    )


def refusal(call: Callable[[], Any]) -> errors.LegacyRefusal:
    with pytest.raises(errors.LegacyRefusal) as caught:
        call()
    return caught.value


def forget_operations_cache() -> None:
    """What a CS refresh does to DIRAC's ``Operations`` (its merged CFG is cached per CS version)."""
    from DIRAC.ConfigurationSystem.Client.Helpers.Operations import Operations

    Operations._Operations__cacheVersion = None  # type: ignore[attr-defined]


@pytest.fixture
def dirac_cs() -> Iterator[Callable[[str, str], None]]:
    """This process's real DIRAC CS, with options set (and seen by ``Operations``) for one test."""
    from DIRAC.ConfigurationSystem.Client.ConfigurationData import gConfigurationData

    added: list[str] = []

    def set_option(path: str, value: str) -> None:
        gConfigurationData.setOptionInCFG(path, value)
        added.append(path)
        forget_operations_cache()

    yield set_option
    for path in added:
        gConfigurationData.deleteOptionInCFG(path)
    forget_operations_cache()


@pytest.fixture
def cs_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``Operations.getValue`` made (the CS reads of the model, the manifest and the job checks)."""
    from DIRAC.ConfigurationSystem.Client.Helpers.Operations import Operations

    reads: list[str] = []
    original = Operations.getValue

    def counted(self: Any, path: str, default: Any = None) -> Any:
        reads.append(path)
        return original(self, path, default)

    monkeypatch.setattr(Operations, "getValue", counted)
    return reads


def model_refusal(jdl: str) -> str:
    """DIRAC's own refusal of one (non-parametric) JDL by its job description models, read live."""
    from DIRAC.Core.Utilities.JDL import jdlToBaseJobDescriptionModel
    from DIRAC.WorkloadManagementSystem.Utilities.JobModel import JobDescriptionModel
    from DIRACCommon.Core.Utilities.ClassAd.ClassAdLight import ClassAd
    from pydantic import ValidationError

    result = jdlToBaseJobDescriptionModel(ClassAd(jdl))
    if not result["OK"]:
        return str(result["Message"])
    model = result["Value"]
    with pytest.raises(ValidationError) as caught:
        JobDescriptionModel(**model.model_dump(exclude_none=True), owner=USER, ownerGroup=GROUP, vo=VO)
    return str(caught.value)


def test_a_parametric_check_reads_the_cs_a_few_times_not_per_job(cs_reads: list[str]) -> None:
    submission = check_submission(parametric(100), USER, GROUP, VO, 100)
    assert len(submission.jobs) == 100
    per_call = len(cs_reads)
    cs_reads.clear()
    check_submission(parametric(2), USER, GROUP, VO, 100)
    assert per_call == len(cs_reads) < 40  # job by job: about 220 per job (22,000 here)


def test_a_refusal_of_job_n_by_the_model_is_the_job_by_job_refusal() -> None:
    jdl = '[ Executable = "/bin/true"; JobType = "%s"; Parameters = {"User", "Test", "Forbidden", "User"}; ]'
    refused = refusal(lambda: check_submission(jdl, USER, GROUP, VO, 20))
    expected = model_refusal('[ Executable = "/bin/true"; JobType = "Forbidden"; ]')
    allowed = "(must be in ['User', 'Test', 'Hospital'])"
    assert f"jobType 'Forbidden' is not allowed for this kind of user {allowed}" in expected
    assert str(refused) == expected


def test_a_refusal_of_job_n_by_the_job_checks_is_legacys() -> None:
    jdl = '[ Executable = "/bin/true"; VirtualOrganization = "%s"; Parameters = {"testvo", "testvo", "elsewhere"}; ]'
    refused = refusal(lambda: check_submission(jdl, USER, GROUP, VO, 20))
    assert refused.result["Message"] == "Job submission error ( 1503 : Wrong Virtual Organization in JDL)"


def test_a_refusal_of_job_n_by_the_manifest_is_legacys(dirac_cs: Callable[[str, str], None]) -> None:
    dirac_cs(CHOICES, "User, Test")
    jdl = '[ Executable = "/bin/true"; JobType = "%s"; Parameters = {"User", "Test", "Hospital"}; ]'
    refused = refusal(lambda: check_submission(jdl, USER, GROUP, VO, 20))
    assert str(refused) == "Hospital is not a valid value for JobType"


def test_the_model_checks_every_job_before_the_job_checks_see_any() -> None:
    jdl = (
        '[ Executable = "/bin/true"; VirtualOrganization = "elsewhere"; JobType = "%s"; '
        'Parameters = {"User", "Forbidden"}; ]'
    )
    refused = refusal(lambda: check_submission(jdl, USER, GROUP, VO, 20))
    assert "jobType 'Forbidden' is not allowed" in str(refused)


@pytest.mark.parametrize(("path", "jdl_option"), [(MAX_CPU, "CPUTime = 600000;"), (CHOICES, 'JobType = "Test";')])
def test_a_cs_change_between_two_calls_is_seen_by_the_second(
    dirac_cs: Callable[[str, str], None], path: str, jdl_option: str
) -> None:
    jdl = parametric(3, jdl_option)
    if path == MAX_CPU:
        assert "cpuTime out of bounds (must be between 100 and 500000)" in str(
            refusal(lambda: check_submission(jdl, USER, GROUP, VO, 20))
        )
        dirac_cs(path, "700000")
        assert len(check_submission(jdl, USER, GROUP, VO, 20).jobs) == 3
    else:
        assert len(check_submission(jdl, USER, GROUP, VO, 20).jobs) == 3
        dirac_cs(path, "User")
        assert str(refusal(lambda: check_submission(jdl, USER, GROUP, VO, 20))) == (
            "Test is not a valid value for JobType"
        )


def test_the_snapshot_is_the_calling_threads_only_and_only_during_the_call(
    dirac_cs: Callable[[str, str], None],
) -> None:
    from DIRAC.WorkloadManagementSystem.Utilities.JobModel import BaseJobDescriptionModel, JobDescriptionModel

    originals = (BaseJobDescriptionModel.__dict__["_config_builder"], JobDescriptionModel.__dict__["_config_builder"])
    seen: dict[str, Any] = {}

    def other_thread() -> None:
        seen["other"] = JobDescriptionModel._config_builder()["maxCPUTime"]

    with job_manager._one_cs_snapshot():
        seen["first"] = JobDescriptionModel._config_builder()["maxCPUTime"]
        dirac_cs(MAX_CPU, "700000")  # the CS changes during the call
        seen["again"] = BaseJobDescriptionModel._config_builder()["maxCPUTime"]
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    seen["after"] = JobDescriptionModel._config_builder()["maxCPUTime"]
    assert seen == {"first": 500000, "again": 500000, "other": 700000, "after": 700000}
    assert (
        BaseJobDescriptionModel.__dict__["_config_builder"],
        JobDescriptionModel.__dict__["_config_builder"],
    ) == originals  # DIRAC's own builders again once no call runs


def test_concurrent_calls_each_keep_their_own_snapshot_and_leave_dirac_as_it_was() -> None:
    from DIRAC.WorkloadManagementSystem.Utilities.JobModel import JobDescriptionModel

    original = JobDescriptionModel.__dict__["_config_builder"]
    inside = threading.Barrier(2)
    results: list[int] = []
    failures: list[BaseException] = []

    def call() -> None:
        try:
            with job_manager._one_cs_snapshot():
                inside.wait(timeout=10)
                results.append(len(check_submission(parametric(5), USER, GROUP, VO, 20).jobs))
                inside.wait(timeout=10)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and results == [5, 5]
    assert JobDescriptionModel.__dict__["_config_builder"] is original


@pytest.mark.parametrize(
    "jdl",
    [
        '[ Executable = "/bin/true"; ]',
        '[ Executable = "/bin/true"; CPUTime = 1000; InputData = {"/testvo/a"}; ]',
        '[ Executable = "/bin/true"; Platform = "NoSuchOS"; ]',
        '[ Executable = "/bin/true"; VirtualOrganization = "elsewhere"; ]',
    ],
)
def test_the_job_checks_built_once_answer_as_diracs_own_per_job_wrappers(
    dirac_cs: Callable[[str, str], None], jdl: str
) -> None:
    """``check_submission`` calls DIRACCommon's checks with configurations it builds once; DIRAC's
    ``JobDBUtils`` wrappers build the same per job: same answers, same prepared JDL."""
    from DIRAC.WorkloadManagementSystem.Client.JobState.JobManifest import makeJobManifestConfig
    from DIRAC.WorkloadManagementSystem.DB import JobDBUtils
    from DIRACCommon.Core.Utilities.ClassAd.ClassAdLight import ClassAd
    from DIRACCommon.WorkloadManagementSystem.DB import JobDBUtils as CommonJobDBUtils

    dirac_cs(f"/Operations/{VO}/InputDataPolicy/InputDataModule", "Some.Module")
    dirac_cs("/Operations/Defaults/JobDescription/DefaultCPUTime", "4242")

    def prepared(manifest_result: dict[str, Any], check: Callable[..., dict[str, Any]]) -> tuple[Any, ...]:
        class_ad = ClassAd(manifest_result["Value"].dumpAsJDL())
        result = check(class_ad)
        return {k: v for k, v in result.items() if k != "CallStack"}, class_ad.asJDL()

    dirac = prepared(
        JobDBUtils.checkAndAddOwner(jdl, USER, GROUP),
        lambda ad: JobDBUtils.checkAndPrepareJob(None, ad, ClassAd("[]"), USER, GROUP, {}, VO),
    )
    config = job_manager._job_check_config(GROUP, VO)
    ours = prepared(
        CommonJobDBUtils.checkAndAddOwner(jdl, USER, GROUP, job_manifest_config=makeJobManifestConfig(GROUP)),
        lambda ad: CommonJobDBUtils.checkAndPrepareJob(None, ad, ClassAd("[]"), USER, GROUP, {}, VO, config=config),
    )
    assert ours == dirac
