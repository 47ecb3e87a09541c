"""RunSpec: the per-run options, declared once, checked before anything runs; the run directory's names."""

from __future__ import annotations

import json

import pytest

from ipai_ops.runs import RunSetupError, RunSpec, record_run
from ipai_ops.runs.layout import ATTEMPT_FILES, RunDir

from .conftest import PY


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"argv": []}, "no command given"),
        ({"argv": [""]}, "no command given"),
        ({"argv": ["true"], "kind": "deploy"}, "kind must be one of"),
        ({"argv": ["true"], "timeout": 0}, r"timeout must be > 0"),
        ({"argv": ["true"], "max_attempts": 0}, "max attempts must be >= 1"),
    ],
)
def test_a_bad_spec_is_a_setup_error(options, message):
    with pytest.raises(RunSetupError, match=message):
        RunSpec(**options)


def test_a_spec_keeps_argv_as_strings_and_replaces_only_what_is_given():
    spec = RunSpec([PY, "-c", 1], agent="coder", timeout=5)
    assert spec.argv == (PY, "-c", "1")
    assert RunSpec.of(spec) is spec
    other = RunSpec.of(spec, timeout=9)
    assert (other.agent, other.timeout, spec.timeout) == ("coder", 9, 5)
    with pytest.raises(RunSetupError, match="kind must be one of"):
        RunSpec.of(spec, kind="deploy")  # a replaced option is checked too
    with pytest.raises(TypeError):
        RunSpec.of(["true"], agnet="typo")  # a misspelt option is no silent default


def test_a_recorder_runs_a_spec_as_it_runs_an_argv_and_options(make_recorder):
    spec = RunSpec([PY, "-c", "print('hi')"], agent="coder", task_ref="T-1", metadata={"pr": 7})
    recorder = make_recorder(use_db=False)
    one = recorder.run(spec)
    two = recorder.run(spec.argv, agent="coder", task_ref="T-1", metadata={"pr": 7})
    for result in (one, two):
        record = json.loads((result.run_dir / "run.json").read_text())
        assert (record["agent"], record["task_ref"], record["metadata"]["pr"]) == ("coder", "T-1", 7)
    assert one.run_id != two.run_id


def test_record_run_sends_run_options_to_the_spec_and_the_rest_to_the_recorder(artifacts):
    result = record_run(
        RunSpec([PY, "-c", "print('x' * 4000)"], agent="a"),
        task_ref="T-2",  # a run option, beside the spec
        use_db=False,
        artifacts_dir=artifacts,
        quiet=True,
        max_output_bytes=1024,  # a recorder option
    )
    assert (result.agent, result.task_ref, result.db) == ("a", "T-2", "disabled")
    assert result.iterations[0].output["max_bytes"] == 1024
    with pytest.raises(TypeError):
        record_run([PY, "-c", "pass"], use_db=False, artifacts_dir=artifacts, no_such_option=1)


def test_the_run_directory_names_are_what_the_recorder_writes(make_recorder):
    result = make_recorder(use_db=False).run([PY, "-c", "import sys; sys.exit(3)"], max_attempts=1)
    attempt = RunDir(result.run_dir).attempt(1)
    written = {p.name for p in attempt.path.iterdir()}
    assert written == {"stdout.log", "stderr.log", "envelope.json"}  # no events: no events file
    assert written <= set(ATTEMPT_FILES)
    assert RunDir(result.run_dir).run_file.is_file()
    assert str(attempt.envelope) == result.iterations[0].envelope
    with pytest.raises(RunSetupError, match="already recorded"):
        RunDir.create(result.run_dir.parent, result.run_id)
