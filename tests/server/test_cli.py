"""The serve flags main.py adds from server.cli."""

from __future__ import annotations

import argparse

import pytest

from server import cli
from server.options import ServerOptions


def parse(argv: list[str]) -> ServerOptions:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.options_from(parser.parse_args(argv))


def test_defaults_are_safe():
    options = parse([])
    assert options == ServerOptions(auth_token=None, allowed_origins=())
    assert options.preview_method == "none" and not options.allow_remote


def test_flags_and_environment(monkeypatch):
    monkeypatch.setenv("SUMIE_AUTH_TOKEN", "from-env")
    options = parse(["--max-queue", "5", "--job-timeout", "2.5", "--max-upload-mb", "1", "--preview-method", "auto",
                     "--allow-origin", "https://a.example", "--allow-remote", "--max-attempts", "3"])
    assert options.auth_token == "from-env" and options.max_queue == 5 and options.job_timeout == 2.5
    assert options.max_upload_bytes == 1024 * 1024 and options.preview_method == "auto"
    assert options.allowed_origins == ("https://a.example",) and options.allow_remote and options.max_attempts == 3
    assert parse(["--auth-token", "cli"]).auth_token == "cli"


def test_nonsense_is_refused():
    with pytest.raises(SystemExit):
        parse(["--max-queue", "0"])
    with pytest.raises(SystemExit):
        parse(["--preview-method", "magic"])


def test_prefetch_is_on_unless_turned_off(monkeypatch):
    assert parse([]).prefetch
    assert not parse(["--no-prefetch"]).prefetch
    monkeypatch.setenv("SUMIE_NO_PREFETCH", "1")
    assert not parse([]).prefetch
