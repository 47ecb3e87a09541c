"""The log reader: normalisation that keeps line numbers, failure markers, steps, regions, any size.

Log snippets here are written in the shape the CI systems print (unit tests); the accuracy
figures come from the real corpus only (tests/classify/corpus).
"""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ipai_ops.classify import LogUnreadable, read_file, read_stream, read_text, reading


def lines_of(log) -> list[str]:
    return [log.line(i) for i in range(log.line_count)]


def test_normalisation_keeps_every_line_and_its_number():
    raw = (
        "\ufeff2024-05-01T10:00:00.1234567Z ##[group]Run npm test\n"
        "2024-05-01T10:00:01.0000000Z \x1b[31mFAIL\x1b[0m src/a.test.js\n"
        "Downloading 10%\rDownloading 55%\rDownloading 100%\n"
        "travis_fold:start:install\r\x1b[0K$ npm ci\n"
        'section_start:1700000000:step_script\r\x1b[0KExecuting "step_script"\n'
        "[2024-05-01T10:00:02Z] plain\n"
        "7:51:34 PM: npm error code ERESOLVE\n"
        "2024-05-01T10:00:03.0000000Z ::error file=a.py,line=3::boom\n"
        "2024-05-01T10:00:04.0000000Z ##[error]Process completed with exit code 1.\n"
    )
    log = read_text(raw)
    assert lines_of(log) == [
        "Run npm test",
        "FAIL src/a.test.js",
        "Downloading 100%",
        "$ npm ci",
        'Executing "step_script"',
        "plain",
        "npm error code ERESOLVE",
        "boom",
        "Process completed with exit code 1.",
    ]
    assert log.annotations == {7, 8}
    assert [log.number(i) for i in range(log.line_count)] == list(range(1, 10))


def test_gh_run_view_log_columns_are_removed_and_the_steps_kept():
    # `gh run view --log`: "<job>\t<step>\t<timestamp> <text>" on every line (a byte-order
    # mark before a job's first timestamp)
    raw = (
        b"test (3.12)\tRun tests\t\xef\xbb\xbf2026-01-01T00:00:00.1Z ##[group]Run pytest -q\n"
        b"test (3.12)\tRun tests\t2026-01-01T00:00:01.2Z FAILED tests/test_a.py::test_b - assert 1 == 2\n"
        b"test (3.12)\tRun tests\t2026-01-01T00:00:02.3Z ##[error]Process completed with exit code 1.\n"
    )
    log = read_text(raw)
    assert [log.line(i) for i in range(log.line_count)] == [
        "Run pytest -q",
        "FAILED tests/test_a.py::test_b - assert 1 == 2",
        "Process completed with exit code 1.",
    ]
    assert log.steps == ((0, "pytest -q"),) and log.annotations == frozenset({2})
    assert log.failed_commands == ["pytest -q"]
    # the step column says where steps start; a "+ x" line inside a step (a diff) is no step
    raw = (
        b"lint\tSet up job\t2026-01-01T00:00:00.1Z Runner 2.3\n"
        b"lint\tRun pre-commit run --all-files\t2026-01-01T00:00:01.1Z trim trailing whitespace....Failed\n"
        b"lint\tRun pre-commit run --all-files\t2026-01-01T00:00:01.2Z + an added line of the diff\n"
        b"lint\tRun pre-commit run --all-files\t2026-01-01T00:00:01.3Z ##[error]Process completed with exit code 1.\n"
    )
    log = read_text(raw)
    assert log.steps == ((0, "Set up job"), (1, "pre-commit run --all-files"))
    assert log.region == ((1, 3),) and log.failed_commands == ["pre-commit run --all-files"]
    # a tab inside an ordinary line is left alone
    assert read_text(b"a\tb\tc\n").line(0) == "a\tb\tc"


def test_crlf_and_trailing_newline_do_not_add_lines():
    assert lines_of(read_text("a\r\nb\r\n")) == ["a", "b"]
    assert read_text("only").line_count == 1


@pytest.mark.parametrize(
    ("text", "kind", "exit_code", "command"),
    [
        ('$ npm test\nx\nThe command "npm test" exited with 1.\n', "step", 1, "npm test"),
        ('The command "bundle install" failed and exited with 5 during .', "step", 5, "bundle install"),
        ("##[group]Run pytest -q\nE boom\n##[error]Process completed with exit code 2.", "step", 2, "pytest -q"),
        ("$ make check\nERROR: Job failed: exit code 2", "step", 2, "make check"),
        ("+ ./gradlew test\nERROR: script returned exit code 1", "step", 1, "./gradlew test"),
        (
            "Starting: Run code quality tests\nScript contents:\nflake8 --format junit-xml\n"
            "##[error]Bash exited with code '1'.",
            "step",
            1,
            "flake8 --format junit-xml",
        ),
        (
            "[app] $ /bin/sh -xe /tmp/jenkins1.sh\n+ pip3 install pygithub\n[app] $ python /tmp/jenkins2.py\n"
            "NameError: name 'Github' is not defined\nBuild step 'Execute Python script' marked build as failure",
            "step",
            None,
            "python /tmp/jenkins2.py",
        ),
        ("~~~ Running tests\n🚨 Error: The command exited with status 3", "step", 3, "Running tests"),
        ("make: *** [Makefile:12: test] Error 2", "tool", 2, "Makefile:12: test"),
        (
            "[ERROR] Failed to execute goal org.apache.maven.plugins:maven-surefire-plugin:3.2:test (default-test)",
            "tool",
            None,
            "org.apache.maven.plugins:maven-surefire-plugin:3.2:test",
        ),
        ("* What went wrong:\nExecution failed for task ':app:checkstyleMain'.", "tool", None, ":app:checkstyleMain"),
        ("npm ERR! Failed at the app@1.0.0 lint script.", "tool", None, "lint"),
        ("ERROR:   py311: commands failed", "tool", None, "py311"),
        (
            'ERROR: failed to solve: process "/bin/sh -c pip install -r req.txt" did not complete successfully: '
            "exit code: 1",
            "tool",
            1,
            "pip install -r req.txt",
        ),
        ('Error: Command "vite build" exited with 127', "tool", 127, "vite build"),
    ],
)
def test_failure_markers_name_the_command_and_exit_code(text, kind, exit_code, command):
    log = read_text(text)
    (marker, found) = log.commands()[-1]
    assert (marker.kind, marker.exit_code, found) == (kind, exit_code, command)


def test_the_failure_region_is_each_failed_step_and_excludes_clean_up():
    raw = "\n".join(
        [
            "$ bundle install",  # 0
            "Bundle complete!",  # 1
            "$ bundle exec rspec",  # 2
            "1 example, 1 failure",  # 3
            'The command "bundle exec rspec" exited with 1.',  # 4
            "$ bundle exec rubocop",  # 5
            "1 offense detected",  # 6
            'The command "bundle exec rubocop" exited with 1.',  # 7
            "Done. Your build exited with 1.",  # 8
            "after_failure output",  # 9
        ]
    )
    log = read_text(raw)
    assert log.region == ((2, 4), (5, 7))
    assert [log.region_number(i) for i in (1, 3, 6, 9)] == [None, 0, 1, None]
    assert log.exit_code == 1 and log.failed_commands == ["bundle exec rspec", "bundle exec rubocop"]


def test_without_markers_the_region_is_the_end_of_the_log():
    log = read_text("\n".join(f"line {n}" for n in range(3000)))
    assert log.region == ((2000, 2999),)
    assert read_text("short\nlog").region == ()


def test_a_long_log_keeps_its_head_and_tail_with_true_line_numbers():
    lines = [f"line {n} " + "x" * 60 for n in range(1, 200_001)]  # ~14 MB
    log = read_stream(io.BytesIO(("\n".join(lines) + "\n").encode()))
    assert log.total_bytes > 10 * reading.MAX_LOG_BYTES
    assert len(log.data) <= reading.MAX_LOG_BYTES and log.skipped_lines > 100_000
    for index in (0, 5, log.gap_index - 1, log.gap_index, log.gap_index + 7, log.line_count - 1):
        assert log.line(index).startswith(f"line {log.number(index)} ")
    assert log.number(log.line_count - 1) == 200_000


@pytest.mark.parametrize("total_lines", [3_000, 200_000])  # under and over MAX_LOG_BYTES
def test_line_numbers_stay_true_when_normalising_shortens_the_head(total_lines):
    # Timestamps and colours make the head's bytes shrink when normalised; the tail's
    # numbers must not move with them (they did, by hundreds of lines, in files over 64 KiB).
    lines = [f"2024-05-01T10:00:00.1234567Z \x1b[32mline {n}\x1b[0m " + "y" * 40 for n in range(1, total_lines + 1)]
    raw = ("\n".join(lines) + "\n").encode()
    assert len(raw) > reading.HEAD_BYTES
    for log in (read_stream(io.BytesIO(raw)), read_text(raw)):
        gap = log.gap_index if log.gap_index is not None else log.line_count // 2
        for index in (0, gap - 1, gap, gap + 3, log.line_count - 1):
            assert log.line(index).startswith(f"line {log.number(index)} "), (index, log.line(index)[:30])
        assert log.number(log.line_count - 1) == total_lines


def test_read_text_of_a_long_string_keeps_its_tail():
    text = "start\n" + "noise\n" * 200_000 + "FAILED tests/test_a.py::test_b - boom\n"
    log = read_text(text)
    assert log.line(log.line_count - 1) == "FAILED tests/test_a.py::test_b - boom"
    assert log.number(log.line_count - 1) == 200_002


def test_a_hundred_megabyte_file_is_streamed(tmp_path):
    path = tmp_path / "big.log"
    block = ("progress " * 10 + "\n").encode() * 10_000
    with open(path, "wb") as handle:
        for _ in range(110):  # ~100 MB
            handle.write(block)
        handle.write(b"npm ERR! code E404\n")
    assert os.path.getsize(path) > 100_000_000
    log = read_file(path)
    assert log.line(log.line_count - 1) == "npm ERR! code E404"
    assert log.number(log.line_count - 1) == 110 * 10_000 + 1
    assert len(log.data) <= reading.MAX_LOG_BYTES


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, "NUL byte"),
        (bytes(range(1, 9)) * 64 + bytes(range(14, 27)) * 64, "not text"),
    ],
)
def test_binary_input_is_refused_in_one_line(data, why):
    with pytest.raises(LogUnreadable, match=why):
        read_text(data)


def test_non_utf8_text_is_read_and_the_bad_bytes_counted():
    log = read_text("caf\xe9 \xe9chou\xe9\n".encode("latin-1") + b"ok\n")
    assert log.invalid_bytes == 3 and log.line(1) == "ok"


def test_exception_types_are_read_from_message_lines():
    data = (
        b"Traceback (most recent call last):\n"
        b'  File "a.py", line 1, in <module>\n'
        b"psycopg2.errors.DeadlockDetected: deadlock detected\n"
        b"E   AssertionError: assert 1 == 2\n"
        b"Caused by: java.net.UnknownHostException: repo.maven.apache.org\n"
        b"Warning: not an exception\n"
    )
    names = [name for _, name in reading.exception_types(data)]
    assert names[:3] == [b"psycopg2.errors.DeadlockDetected", b"AssertionError", b"java.net.UnknownHostException"]


def test_a_carriage_return_ending_a_line_overwrites_nothing():
    log = read_text("> Unable to find package 'X'.\r\nDone 10%\rDone 100%\r\nlast\r")
    assert [log.line(i) for i in range(log.line_count)] == ["> Unable to find package 'X'.", "Done 100%", "last"]


@pytest.mark.parametrize(
    "prefix",
    ["11:02:14  ", "11:02:14.123  ", "2013-09-27 18:47:11.720 | ", "2026-07-24T18:47:03.6568821Z "],
)
def test_ci_timestamp_prefixes_are_removed_so_line_anchored_signatures_match(prefix):
    log = read_text(f"{prefix}[INFO] start\n{prefix}[ERROR] COMPILATION ERROR : \n")
    assert log.line(1) == "[ERROR] COMPILATION ERROR :"


_WORDS = st.sampled_from(
    [
        "E",
        "raise",
        "Uncaught",
        "(in",
        "promise)",
        "Unhandled",
        "exception",
        "ERROR",
        "FATAL",
        "thrown",
        "**",
        "(",
        "Exception",
        "in",
        "thread",
        "TypeError",
        "a.b.CError",
        "x",
        "Foo)",
        "E  ",
        "\t",
        ">",
        "|",
    ]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_WORDS, min_size=1, max_size=8).map(" ".join))
@example("Uncaught (in promise) TypeError")  # four words: the longest lone-type line
@example("|  Unhandled exception a.b.CError")
@example("Uncaught (in promise) TypeError x")
@example("| > Uncaught (in promise) TypeError")
def test_the_one_line_shortcut_of_exception_types_changes_nothing(line):
    data = line.encode()
    full = [(m.start(reading._TYPE_GROUP), m.group(reading._TYPE_GROUP)) for m in reading._TYPE_LINE_RE.finditer(data)]
    expected = [(o, n) for o, n in full if len(n) >= 3 and (b"." in n or n[:1].isupper())]
    assert reading.exception_types(data) == expected


def test_buildkit_step_prefixes_are_removed_and_lines_keep_their_numbers():
    raw = (
        "#18 [build 5/6] RUN dotnet publish -c Release -o /app\n"
        "#18 0.412 Determining projects to restore...\n"
        "#18 11.02 /src/Api/Program.cs(12,5): error CS0023: Operator '.' cannot be applied\n"
        '#18 ERROR: process "/bin/sh -c dotnet publish" did not complete successfully: exit code: 1\n'
        "# a comment 1.5 stays\n"
    )
    log = read_text(raw)
    assert log.line(1) == "Determining projects to restore..."
    assert log.line(2).startswith("/src/Api/Program.cs(12,5): error CS0023")
    assert log.line(0).startswith("#18 [build 5/6] RUN") and log.line(3).startswith("#18 ERROR: process")
    assert log.line(4) == "# a comment 1.5 stays"
    assert [log.number(i) for i in range(log.line_count)] == [1, 2, 3, 4, 5]


def test_a_go_log_timestamp_under_the_ci_timestamp_is_removed_too():
    raw = (
        "2026-08-07T06:03:50.2002023Z 2026/08/07 06:03:50         === ERROR\n"
        "2026-08-07T06:03:50.2026229Z 2026/08/07 06:03:50.123456 --- FAIL: chainsaw/apply (1218.59s)\n"
        "2026-08-07T06:03:50.2028722Z 1999/01/01 is not a prefix here\n"
    )
    log = read_text(raw)
    assert log.line(0) == "        === ERROR"
    assert log.line(1) == "--- FAIL: chainsaw/apply (1218.59s)"
    assert log.line(2) == "1999/01/01 is not a prefix here"


def test_node_child_process_command_failed_names_the_command():
    log = read_text(
        "Running validate...\n"
        "Step validate failed: Command failed: npm run test:run\n"
        "##[error]Process completed with exit code 1.\n"
    )
    assert "npm run test:run" in log.failed_commands
    assert any(m.kind == "tool" and m.command == "npm run test:run" for m in log.markers)
