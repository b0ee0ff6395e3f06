"""`imgserve collection list` with no collections said nothing at all (exit 0): it now says so on stderr, leaving
stdout (the listing, or `--json`'s `[]`) as it was for scripts."""

import argparse
import json
from pathlib import Path

import pytest

from serving.cli_collections import _cmd_list
from serving.collections.store import CollectionStore
from serving.jobs.database import open_job_database

pytestmark = pytest.mark.unit


def test_an_empty_list_says_so_and_a_listing_does_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path}/jobs.sqlite"
    args = argparse.Namespace(database_url=url, tenant="default", json=False)
    assert _cmd_list(args) == 0
    printed = capsys.readouterr()
    assert printed.out == "" and printed.err.strip() == "no collections in tenant default"
    assert _cmd_list(argparse.Namespace(**{**vars(args), "json": True})) == 0
    assert json.loads(capsys.readouterr().out) == []
    CollectionStore(open_job_database(url)).open("holiday", ["metadata"], ["/photos"])
    assert _cmd_list(args) == 0
    printed = capsys.readouterr()
    assert "holiday" in printed.out and printed.err == ""
