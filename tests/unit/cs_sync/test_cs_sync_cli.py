"""``diracx-bridge cs-sync``: arguments, output and exit codes, as an admin or cron sees them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import zlib

import pytest
from cs_sync_helpers import commit_count, git, minimal, realistic, set_option, write_cfg

from diracx_bridge import cli
from diracx_bridge.cs_sync import cli as cs_sync_cli
from diracx_bridge.cs_sync.sources import LiveSource


def run(*argv: str) -> int:
    return cli.main(["cs-sync", *argv])


@pytest.fixture
def cfg_file(tmp_path):
    return write_cfg(tmp_path / "CS.cfg", realistic())


def test_export_then_no_change(cfg_file, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert run(str(cfg_file), str(repo)) == 0
    out = capsys.readouterr().out
    assert "Exported 3 VOs, 8 users, 7 groups." in out
    assert "Committed " in out and "initial export of 3 VOs" in out
    assert "/Registry/Hosts/dirac.example.org" in out
    assert "no host identities" in out
    assert run(str(cfg_file), str(repo)) == 0
    out = capsys.readouterr().out
    assert "No change: master (commit" in out
    assert "/Registry/Users/dave" in out  # the report is shown every time
    assert commit_count(repo) == 1


def test_dry_run_shows_the_diff_and_writes_nothing(cfg_file, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert run("--dry-run", str(cfg_file), str(repo)) == 0
    out = capsys.readouterr().out
    assert "Dry run, nothing written. Would commit: cs-sync: initial export" in out
    assert "+++ b/default.yml" in out
    assert "+      7a1c8f6e-0001:" in out
    assert not repo.exists()


def test_invalid_cs_exits_1_and_names_the_path(tmp_path, capsys):
    cfg = minimal()
    set_option(cfg, "Registry/Users/alice/Email", "alice(at)example.org")
    repo = tmp_path / "repo"
    assert run(str(write_cfg(tmp_path / "CS.cfg", cfg)), str(repo)) == 1
    captured = capsys.readouterr()
    assert "/Registry/Users/alice/Email" in captured.err
    assert "nothing was written" in captured.err
    assert captured.out == ""
    assert not repo.exists()


def test_inconsistent_diracx_settings_exit_1(tmp_path, capsys):
    cfg = minimal()
    set_option(cfg, "DiracX/DisabledVOs", "vo1")
    set_option(cfg, "DiracX/FutureClientEnabled/WorkloadManagement/JobStateUpdate", "yes")
    assert run(str(write_cfg(tmp_path / "CS.cfg", cfg)), str(tmp_path / "repo")) == 1
    assert "/DiracX/DisabledVOs" in capsys.readouterr().err


def test_missing_source_exits_3(tmp_path, capsys):
    assert run(str(tmp_path / "nope.cfg"), str(tmp_path / "repo")) == 3
    assert "nope.cfg does not exist" in capsys.readouterr().err


def test_repository_problem_exits_4(cfg_file, tmp_path, capsys):
    target = tmp_path / "data"
    target.mkdir()
    (target / "file").write_text("x")
    assert run(str(cfg_file), str(target)) == 4
    assert "is not a git repository" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--live", "a.cfg", "repo"], "either CFG_FILE or --live"),
        (["repo"], "give the legacy CS file"),
        (["--watch", "--dry-run", "a.cfg", "repo"], "cannot be combined"),
        (["--interval", "5", "a.cfg", "repo"], "only apply to --watch"),
        (["--watch", "--interval", "0", "a.cfg", "repo"], "must be greater than 0"),
        ([], "required"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as excinfo:
        run(*argv)
    assert excinfo.value.code == 2
    assert message in capsys.readouterr().err


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit) as excinfo:
        run("--help")
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for line in ("0  exported, or nothing to change", "1  the CS cannot be exported", "3  the CS could not be read"):
        assert line in out


def test_live_mode_reads_the_configuration_server(tmp_path, capsys, monkeypatch):
    class Client:
        def getCompressedDataIfNewer(self, version: str) -> dict:
            return {"OK": True, "Value": {"newestVersion": "v9", "data": zlib.compress(str(minimal()).encode())}}

    monkeypatch.setattr(cs_sync_cli, "LiveSource", lambda: LiveSource(client_factory=Client))
    repo = tmp_path / "repo"
    assert run("--live", str(repo)) == 0
    assert "Configuration Server, CS version v9" in capsys.readouterr().out
    assert "Source: Configuration Server, CS version v9" in git(repo, "log", "-1", "--format=%b")


def test_watch_with_a_bound_stops_by_itself(cfg_file, tmp_path, capsys):
    repo = tmp_path / "repo"
    code = run("--watch", "--interval", "0.01", "--max-iterations", "3", "--settle", "0", str(cfg_file), str(repo))
    assert code == 0
    out = capsys.readouterr().out
    assert "watching CS file" in out
    assert "stopped after 3 polls, 1 commits" in out
    assert commit_count(repo) == 1


def test_watch_stops_on_sigterm(tmp_path):
    """The daemon case: systemd sends SIGTERM; the loop ends after the current poll, exit 0."""
    cfg_path = write_cfg(tmp_path / "CS.cfg", minimal())
    repo = tmp_path / "repo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    argv = ["cs-sync", "--watch", "--interval", "3600", "--settle", "0", str(cfg_path), str(repo)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "diracx_bridge.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # A hang kills the process, which ends its output: the readline below cannot block forever.
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        # The loop prints (and flushes) each commit, after its signal handlers are in place:
        # from that line on, SIGTERM must end the loop at once (it is waiting for the next poll).
        assert proc.stdout is not None
        lines = []
        while not any("Committed " in line for line in lines):
            line = proc.stdout.readline()
            assert line, f"the watch ended before its first commit: {lines} {proc.communicate()}"
            lines.append(line)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + out
    assert proc.returncode == 0, err
    assert "stopped after 1 polls, 1 commits" in out
    assert commit_count(repo) == 1
