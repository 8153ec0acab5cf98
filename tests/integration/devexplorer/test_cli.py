"""`tfgateway-devexplorer` as a program: --load, --state across restarts, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.devexplorer import DevExplorerProcess
from tests.support.http import SyncHTTP
from tests.support.netns import Namespace, NamespaceSet
from tests.support.processes import free_port, port_open, stop, wait_until
from tfgateway_devexplorer.__main__ import parse_args
from tfgateway_devexplorer.server import DevExplorer, LoadError

NODE = "node-cli"
http = SyncHTTP()
SEED = {
    "users": [{"id": 42, "name": "alice.3bot", "pubkey": "ab" * 32}],
    "workloads": [
        {"type": "subdomain", "node_id": NODE, "customer_tid": 42, "domain": "a.example.com",
         "ips": ["185.69.166.1"]},
        {"type": "domain_delegate", "node_id": NODE, "customer_tid": 42, "domain": "b.example.org"},
        {"type": 5, "node_id": NODE, "customer_tid": 42, "domain": "p.example.com",
         "addr": "185.69.166.2", "port": 80, "port_tls": 443},
    ],
}  # fmt: skip


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfgateway_devexplorer", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def poll_ids(url: str) -> list[int]:
    response = http.get(f"{url}/reservations/nodes/{NODE}/workloads", params={"from": 0})
    assert response.status_code == 200
    return [item["id"] for item in response.json() or []]


def test_load_file_is_served(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(SEED))
    server = DevExplorerProcess(load=[seed], log_file=tmp_path / "log")
    server.start()
    try:
        assert poll_ids(server.url) == [43, 44, 45]  # user 42 moved the shared counter
        user = http.get(f"{server.url}/users/42").json()
        assert user["name"] == "alice.3bot"
    finally:
        server.stop()


def test_state_file_survives_restart(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(SEED))
    state = tmp_path / "state.json"
    server = DevExplorerProcess(load=[seed], state=state, log_file=tmp_path / "log")
    server.start()
    try:
        put = http.put(
            f"{server.url}/reservations/nodes/{NODE}/workloads/43-1", content=b'{"state":0}'
        )
        assert put.status_code == 201
        http.delete(f"{server.url}/reservations/nodes/{NODE}/workloads/43-1")
        added = http.post(
            f"{server.admin_url}/dev/workloads",
            json={"type": "delegate", "node_id": NODE, "customer_tid": 42, "domain": "c.example"},
        )
        assert added.json()[0]["id"] == 46
    finally:
        server.kill()  # no clean shutdown: every acknowledged change must already be on disk
    assert not list(tmp_path.glob(".devexplorer-*")), "temporary files left behind"
    again = DevExplorerProcess(load=[seed], state=state, log_file=tmp_path / "log")
    again.start()
    try:
        assert poll_ids(again.url) == [44, 45, 46]  # 43 deleted; --load not applied twice
        info = http.get(f"{again.admin_url}/dev/workloads/43").json()
        assert (info["next_action"], info["result"]["state"]) == (6, 2)
        state_view = http.get(f"{again.admin_url}/dev/state").json()
        assert [d["gwid"] for d in state_view["deletes"]] == ["43-1"]
        nxt = http.post(
            f"{again.admin_url}/dev/workloads",
            json={"type": "delegate", "node_id": NODE, "customer_tid": 42, "domain": "d.example"},
        )
        assert nxt.json()[0]["id"] == 47
    finally:
        again.stop()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "invalid JSON at line 1 column 2"),
        ('{"workloads": [{"type": "ftp", "node_id": "n"}]}', "workloads.0.type"),
        ('{"workloads": [{"type": "proxy"}]}', "workloads.0.node_id"),
        ('{"users": [{"id": 1, "pubkey": "00"}, {"id": 1, "pubkey": "00"}]}', "already used"),
        ('{"wrkloads": []}', "wrkloads"),
    ],
)
def test_bad_load_files_are_clear_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "seed.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LoadError) as err:
        DevExplorer().load_seed_file(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_bad_load_file_stops_the_program_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text('{"workloads": [{"type": "ftp", "node_id": "n"}]}')
    result = run_cli("--port", str(free_port()), "--load", str(path))
    assert result.returncode == 2
    assert f"{path}: workloads.0.type: " in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_state_file_is_a_clear_error(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"format": 99}')
    result = run_cli("--port", str(free_port()), "--state", str(state))
    assert result.returncode == 2
    assert "not a usable state file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "not a TCP port"),
        (["--state", "/nonexistent-dir/s.json"], "does not exist"),
        (["--log-level", "loud"], "invalid choice"),
        (["--netns", "tfgw-no-such-namespace"], "no such network namespace"),
    ],
)
def test_bad_arguments_are_clear_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    server = DevExplorerProcess(log_file=tmp_path / "log")
    server.start()
    try:
        result = run_cli("--port", str(server.port))
        assert result.returncode == 1
        assert "cannot listen" in result.stderr
    finally:
        server.stop()


def http_get_inside(ns: Namespace, port: int, path: str) -> tuple[int, bytes]:
    """GET 127.0.0.1:port/path from inside a network namespace (one connection, closed)."""
    with ns.connect("127.0.0.1", port, timeout=5.0) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_netns_listens_on_the_same_port_inside_the_namespace(tmp_path: Path) -> None:
    """`--netns NAME`: one explorer, served on host loopback and on the namespace's loopback
    (how the end-to-end harness lets the gateway in its namespace reach it with no relay);
    a listener pause refuses connections in both places, then both come back."""
    namespaces = NamespaceSet(prefix="tx")
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        ns = namespaces.add("gw")
        assert not ns.port_open("127.0.0.1", port)
        with (tmp_path / "log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tfgateway_devexplorer", "--port", str(port),
                 "--netns", ns.name],
                stdout=log, stderr=log,
            )  # fmt: skip

        def both_open() -> bool:
            return port_open("127.0.0.1", port) and ns.port_open("127.0.0.1", port)

        wait_until(both_open, timeout=15, what="explorer on host and namespace loopback")
        admin = f"http://127.0.0.1:{port}"
        created = http.post(f"{admin}/dev/workloads", json=SEED["workloads"][0]).json()
        status, body = http_get_inside(
            ns, port, f"/api/v1/reservations/nodes/{NODE}/workloads?from=0"
        )
        assert status == 200
        assert [item["id"] for item in json.loads(body)] == [created[0]["id"]]
        # the same server: the poll from inside is in the state the host sees
        assert http.get(f"{admin}/dev/state").json()["polls"][NODE]["count"] == 1
        assert http.post(f"{admin}/dev/listener/pause", json={"seconds": 2}).status_code == 200
        wait_until(
            lambda: not port_open("127.0.0.1", port) and not ns.port_open("127.0.0.1", port),
            timeout=5, interval=0.02, what="both listeners paused",
        )  # fmt: skip
        wait_until(both_open, timeout=15, what="both listeners back")
        status, body = http_get_inside(ns, port, "/dev/health")
        assert status == 200
        assert json.loads(body)["ok"] is True
    finally:
        if proc is not None:
            stop(proc)
        namespaces.close()
    assert proc.returncode == 0
