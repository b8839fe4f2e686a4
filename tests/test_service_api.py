"""The HTTP API of ``canon serve`` against real server processes on 127.0.0.1.

One server (module scope) runs on a copy of the embedded default zoo; the
restart test starts and kills its own servers on another copy.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient
from servers import MAX_UPLOAD_MB, TOKEN, Server, default_zoo, launch

import canon
from canon.cli import cli
from canon.service import create_app

CONFIG = {"in_features": 64, "hidden": [256, 256], "classes": 10}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the token and a 1 MiB upload limit on a copy of the default zoo
    (started at the beginning of the session: see tests/conftest.py)."""
    running = launch("api", tmp_path_factory)
    running.wait_ready()
    yield running
    running.stop()


def checkpoint(tmp_path: Path, seed: int, config: dict[str, object] = CONFIG) -> bytes:
    """The safetensors bytes of a random MLP of the default zoo's family."""
    torch.manual_seed(seed)
    path = tmp_path / f"net-{seed}.safetensors"
    canon.save_state(canon.build_model("mlp", config).state_dict(), path)
    return path.read_bytes()


def snapshot(zoo: Path) -> tuple[object, ...]:
    """The zoo's object files and entry rows."""
    files = sorted(str(p.relative_to(zoo)) for p in (zoo / "objects").rglob("*") if p.is_file())
    con = sqlite3.connect(zoo / "canon.sqlite")
    try:
        rows = con.execute("SELECT id, name FROM entries ORDER BY name").fetchall()
    finally:
        con.close()
    return files, rows


def upload_params(name: str, **extra: str) -> dict[str, str]:
    """The query of an upload of a default-zoo MLP named ``name``."""
    return {"name": name, "arch": "mlp", "config": json.dumps(CONFIG), **extra}


def test_info_and_openapi_schema(server: Server) -> None:
    """/api/info reports the zoo and write mode; /openapi.json lists the endpoints."""
    info = server.get("/api/info").json()
    assert info["entries"] == 9 and info["read_only"] is False
    assert info["max_upload_bytes"] == MAX_UPLOAD_MB * 2**20
    paths = server.get("/openapi.json").json()["paths"]
    for path in (
        "/api/entries",
        "/api/entries/{name}/weights",
        "/api/compare",
        "/api/jobs/{job_id}",
    ):
        assert path in paths
    assert server.get("/api/info").headers["x-content-type-options"] == "nosniff"


def test_list_and_filter_entries(server: Server) -> None:
    """The entry list filters by tag, architecture, dataset and kind; a bad filter is a 422."""
    names = [e["name"] for e in server.get("/api/entries").json()["entries"]]
    assert len(names) == 9 and names == sorted(names)
    sgd = server.get("/api/entries", params={"tag": "algo=sgd"}).json()
    assert sgd["count"] == 3 and {e["name"] for e in sgd["entries"]} == {"sgd-0", "sgd-1", "sgd-2"}
    both = server.get("/api/entries", params=[("tag", "algo=sgd"), ("tag", "seed=1")]).json()
    assert [e["name"] for e in both["entries"]] == ["sgd-1"]
    assert (
        server.get("/api/entries", params={"arch": "mlp", "dataset": "digits"}).json()["count"] == 9
    )
    assert server.get("/api/entries", params={"kind": "midpoint"}).json()["count"] == 0
    bad = server.get("/api/entries", params={"tag": "no-equals-sign"})
    assert bad.status_code == 422 and bad.json()["error"]["type"] == "InvalidEntryError"


def test_show_entry_and_name_validation(server: Server) -> None:
    """An entry shows metadata, metrics and reference; unknown or malformed names are 404/422."""
    entry = server.get("/api/entries/sgd-0").json()
    assert entry["name"] == "sgd-0" and entry["tags"] == {"algo": "sgd", "seed": "0"}
    assert entry["config"]["hidden"] == [256, 256] and entry["dataset"] == "digits"
    assert entry["metrics"]["train_error"] == 0.0 and entry["parents"] == []
    assert entry["reference"] and entry["weights_url"] == "/api/entries/sgd-0/weights"
    missing = server.get("/api/entries/sgd-9")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "EntryNotFoundError"
    assert "did you mean" in missing.json()["error"]["message"]
    assert "/" not in missing.json()["error"]["message"]  # the server's paths stay private
    for bad in ("..", ".hidden", "a%20b", "..%2F..%2Fetc%2Fpasswd"):
        response = server.get(f"/api/entries/{bad}/weights")
        assert response.status_code in (404, 422), bad
        assert "error" in response.json()


def test_download_is_the_object_byte_for_byte(server: Server) -> None:
    """Weights download as the stored object: same bytes, sha256 ETag, 304 when unchanged."""
    entry = server.get("/api/entries/rsgd-1").json()
    response = server.get("/api/entries/rsgd-1/weights")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    obj = server.zoo / "objects" / entry["id"][:2] / f"{entry['id']}.safetensors"
    assert response.content == obj.read_bytes()
    assert hashlib.sha256(response.content).hexdigest() == entry["id"]
    assert response.headers["etag"] == f'"{entry["id"]}"'
    again = server.get("/api/entries/rsgd-1/weights", headers={"If-None-Match": f'"{entry["id"]}"'})
    assert again.status_code == 304 and again.content == b""


def test_upload_needs_the_token(server: Server, tmp_path: Path) -> None:
    """Uploads without a token, or with a wrong one, are 401 and change nothing."""
    before = snapshot(server.zoo)
    data = checkpoint(tmp_path, 100)
    for token in (None, "wrong-token"):
        response = server.post("/api/entries", token, params=upload_params("up-x"), content=data)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "AuthenticationError"
        assert response.headers["www-authenticate"] == "Bearer"
    assert snapshot(server.zoo) == before


@pytest.mark.slow  # the corpus uploads in-process
def test_upload_with_token_adds_an_entry(server: Server, tmp_path: Path) -> None:
    """An upload with the token is added as `canon add` adds it: evaluated, tagged, listed."""
    params = upload_params("up-1", dataset="digits", tag="algo=random")
    response = server.post("/api/entries", TOKEN, params=params, content=checkpoint(tmp_path, 1))
    assert response.status_code == 201, response.text
    entry = response.json()
    assert entry["name"] == "up-1" and entry["tags"] == {"algo": "random"}
    assert 0.5 < entry["metrics"]["train_error"] <= 1.0  # a random net on digits
    assert "up-1" in [e["name"] for e in server.get("/api/entries").json()["entries"]]
    downloaded = server.get(entry["weights_url"]).content
    assert hashlib.sha256(downloaded).hexdigest() == entry["id"]


@pytest.mark.parametrize(
    ("case", "status", "kind"),
    [
        ("garbage", 422, "CheckpointFormatError"),
        ("wrong-shapes", 422, "SpecMismatchError"),
        ("user-code", 422, "ConfigError"),
        ("file-dataset", 422, "ConfigError"),
        ("bad-name", 422, "RequestValidationError"),
        ("bad-tag", 422, "InvalidEntryError"),
        ("name-taken", 409, "NameClashError"),
        ("too-large", 413, "RequestTooLargeError"),
        ("too-large-streamed", 413, "RequestTooLargeError"),
    ],
)
def test_rejected_upload_changes_nothing(
    server: Server, tmp_path: Path, case: str, status: int, kind: str
) -> None:
    """Each invalid upload gets a clear JSON error with its status and leaves the zoo as it was."""
    good = checkpoint(tmp_path, 7)
    params = upload_params("up-bad")
    content: bytes | Iterator[bytes] = good
    if case == "garbage":
        content = b"not a safetensors file"
    elif case == "wrong-shapes":
        content = checkpoint(tmp_path, 7, {**CONFIG, "hidden": [32, 32]})
    elif case == "user-code":
        params.update(arch="os:system", config=json.dumps({"command": "true"}))
    elif case == "file-dataset":
        params["dataset"] = "npz:/etc/hostname"
    elif case == "bad-name":
        params["name"] = "../escape"
    elif case == "bad-tag":
        params["tag"] = "=value"
    elif case == "name-taken":
        params["name"] = "sgd-0"
    elif case == "too-large":
        content = b"\0" * (MAX_UPLOAD_MB * 2**20 + 1)
    elif case == "too-large-streamed":  # no Content-Length: the server counts the bytes
        content = iter([b"\0" * 2**16] * (MAX_UPLOAD_MB * 16 + 1))
    before = snapshot(server.zoo)
    response = server.post("/api/entries", TOKEN, params=params, content=content)
    assert response.status_code == status, response.text
    assert response.json()["error"]["type"] == kind
    assert snapshot(server.zoo) == before


def test_bad_requests_get_json_errors(server: Server) -> None:
    """Unknown routes, bad JSON, bad fields and unknown jobs are 4xx JSON errors, never 500."""
    cases = [
        (server.get("/api/nothing-here"), 404, "NotFound"),
        (server.post("/api/compare", content=b"{not json"), 422, "RequestValidationError"),
        (server.post("/api/compare", json={"a": "sgd-0"}), 422, "RequestValidationError"),
        (
            server.post("/api/compare", json={"a": "sgd-0", "b": "sgd-1", "paths": ["bend"]}),
            422,
            "RequestValidationError",
        ),
        (server.post("/api/compare", json={"a": "sgd-0", "b": "zzz"}), 404, "EntryNotFoundError"),
        (server.post("/api/table", json={"names": ["sgd-0"]}), 422, "ConfigError"),
        (server.get("/api/jobs/0123456789abcdef0123456789abcdef"), 404, "JobNotFoundError"),
        (server.get("/api/jobs/..%2F..%2Fetc%2Fpasswd"), 404, "NotFound"),
        (server.post("/api/info"), 405, "MethodNotAllowed"),
        (server.post("/api/table", content=b"[" * (2**20 + 10)), 413, "RequestTooLargeError"),
    ]
    for response, status, kind in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["type"] == kind, response.text


def test_comparison_job_runs_to_completion(server: Server) -> None:
    """An uncached comparison is a job (202) that finishes; then it is served from the cache."""
    request = {"a": "rsgd-0", "b": "rsgd-2", "paths": ["linear", "geodesic"], "points": 9}
    response = server.post("/api/compare", json=request)
    assert response.status_code == 202  # not computed inline: the answer is the job, not done
    job = response.json()
    assert job["state"] in ("queued", "running") and response.headers["location"] == job["url"]
    done = server.wait_job(job["id"])
    assert done["total"] == 2 and done["done"] == 2 and done["attempts"] == 1
    result = done["result"]
    assert set(result["curves"]) == {"linear", "geodesic"}
    cached = server.post("/api/compare", json=request)
    assert cached.status_code == 200
    body = cached.json()
    assert body["curves"]["geodesic"]["barrier"] == result["curves"]["geodesic"]["barrier"]
    figure = server.get(body["figure_url"])
    assert figure.status_code == 200 and figure.headers["content-type"] == "image/svg+xml"
    assert b"<svg" in figure.content


def test_identical_requests_share_one_job(server: Server) -> None:
    """Two clients asking at once for the same uncached table get the same job."""
    request = {"names": ["adv-0", "rsgd-1", "sgd-2"], "path": "linear", "points": 9}
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: server.post("/api/table", json=request), range(2))
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    done = server.wait_job(first.json()["id"])
    table = server.post("/api/table", json=request)
    assert table.status_code == 200
    assert table.json()["matrix"] == done["result"]["matrix"]
    assert table.json()["names"] == ["adv-0", "rsgd-1", "sgd-2"]


def test_tables_through_the_family_reference_are_their_own_jobs(server: Server) -> None:
    """``align: reference`` asks for a table through the family reference: a job of its
    own (not the pairwise table's), whose result says so and is then read from the cache."""
    request = {"names": ["adv-0", "sgd-1", "sgd-2"], "path": "linear_aligned", "points": 5}
    through = server.post("/api/table", json={**request, "align": "reference"})
    direct = server.post("/api/table", json=request)
    assert through.status_code == direct.status_code == 202
    assert through.json()["id"] != direct.json()["id"]
    done = server.wait_job(through.json()["id"])
    assert done["result"]["options"]["align"] == "reference"
    again = server.post("/api/table", json={**request, "align": "reference"})
    assert again.status_code == 200 and again.json()["matrix"] == done["result"]["matrix"]
    server.wait_job(direct.json()["id"])
    refused = server.post("/api/table", json={**request, "align": "nearest"})
    assert refused.status_code == 422


def test_midpoint_job_adds_an_entry(server: Server) -> None:
    """A midpoint needs the token, runs as a job and adds a `midpoint` entry with its parents."""
    request = {"a": "sgd-0", "b": "sgd-1", "name": "mid-01", "epochs": 2}
    assert server.post("/api/midpoints", json=request).status_code == 401
    response = server.post("/api/midpoints", TOKEN, json=request)
    assert response.status_code == 202, response.text
    done = server.wait_job(response.json()["id"])
    assert done["result"]["entry"]["name"] == "mid-01"
    assert done["result"]["restarts"] == 0 and done["result"]["lr"] == 0.02
    entry = server.get("/api/entries/mid-01").json()
    assert entry["kind"] == "midpoint" and entry["parent_names"] == ["sgd-0", "sgd-1"]
    assert "bend_barrier" in entry["metrics"]
    clash = server.post("/api/midpoints", TOKEN, json=request)
    assert clash.status_code == 409
    # A table without names takes the solutions only, as `canon table` does, unless `kind`
    # says otherwise: one midpoint alone is too few for a table.
    lone = server.post("/api/table", json={"kind": "midpoint", "metric": "euclidean"})
    assert lone.status_code == 422 and "has 1" in lone.json()["error"]["message"], lone.text
    assert server.post("/api/table", json={"kind": "midpoints"}).status_code == 422


@pytest.mark.slow  # kills and restarts a real server process
def test_job_survives_a_restart(server: Server) -> None:
    """A job cut off by a killed server is queued again and finished by the next server."""
    names = ["adv-1", "adv-2", "rsgd-1", "sgd-1"]
    job = server.post("/api/table", json={"names": names, "points": 9}).json()
    running = server.wait_job(job["id"], until="running")
    assert running["done"] < 6  # killed before its 6 pairs are done
    server.stop(kill=True)
    con = sqlite3.connect(server.zoo / "canon.sqlite")
    try:
        state = con.execute("SELECT state FROM jobs WHERE id = ?", (job["id"],)).fetchone()
    finally:
        con.close()
    assert state == ("running",)
    server.restart()
    done = server.wait_job(job["id"])
    assert done["attempts"] == 2 and done["result"]["names"] == names
    assert len(done["result"]["matrix"]) == len(names)


def test_server_without_token_is_read_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Without a token every write endpoint answers 403 and reads still work."""
    zoo = default_zoo(tmp_path_factory.getbasetemp(), tmp_path_factory.mktemp("ro") / "zoo")
    with TestClient(create_app(zoo, token=None)) as client:
        assert client.get("/api/info").json()["read_only"] is True
        headers = {"Authorization": f"Bearer {TOKEN}"}
        upload = client.post("/api/entries", params={"name": "x"}, content=b"x", headers=headers)
        midpoint = client.post(
            "/api/midpoints", json={"a": "sgd-0", "b": "sgd-1", "name": "m"}, headers=headers
        )
        for refused in (upload, midpoint):
            assert refused.status_code == 403
            assert refused.json()["error"]["type"] == "ReadOnlyError"
        assert client.get("/api/entries/sgd-0").status_code == 200
    assert len(snapshot(zoo)[1]) == 9


@pytest.mark.slow  # a real `canon serve` process
def test_serve_refuses_a_missing_zoo(tmp_path: Path) -> None:
    """`canon serve` on a folder that is not a zoo exits 1 with one line and creates nothing."""
    result = CliRunner().invoke(cli, ["serve", "--zoo", str(tmp_path / "none"), "--port", "0"])
    assert result.exit_code == 1 and "is not a zoo" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "none").exists()
