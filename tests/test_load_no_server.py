"""`batchsizer load` against an address where nothing listens: it says why every request failed and
exits with an error (it printed a row of failures and exited 0)."""

from __future__ import annotations

import json
import socket

from click.testing import CliRunner

from batchsizer.cli import cli


def _closed_port() -> int:
    with socket.socket() as s:  # a port the system just gave and took back: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_load_with_no_server_says_so_and_fails(tmp_path) -> None:
    out = tmp_path / "load.json"
    url = f"http://127.0.0.1:{_closed_port()}"
    r = CliRunner().invoke(cli, ["load", url, "--rate", "5", "--duration", "0.5", "--json", str(out)])
    assert r.exit_code == 2, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error: url:") and "answered no request" in last and "ConnectError" in last, r.output
    rates = json.loads(out.read_text())["rates"]  # what was measured is still written
    assert rates[0]["ok"] == 0 and rates[0]["failed"] == rates[0]["sent"] and rates[0]["failures"]
