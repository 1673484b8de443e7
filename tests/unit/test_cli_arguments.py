"""The CLI's argument handling: opaque token values that start with "-"."""

from __future__ import annotations

import pytest

from auditlog_service.cli import build_parser, joined_token_values


@pytest.mark.parametrize("command", ["export", "tail"])
def test_a_cursor_that_starts_with_a_dash_is_taken_as_the_cursor(command: str) -> None:
    # base64url: one cursor in 64 starts with "-", which argparse would take for an option.
    argv = [command, "--tenant", "t-1", "--cursor", "-Xq9_cursor", "--format", "jsonl"]
    if command == "tail":
        argv = argv[:-2]
    args = build_parser().parse_args(joined_token_values(argv))
    assert args.cursor == "-Xq9_cursor"
    assert args.tenant == "t-1"


def test_other_arguments_pass_unchanged() -> None:
    argv = ["export", "--tenant", "--t", "--cursor"]
    assert joined_token_values(argv) == argv
