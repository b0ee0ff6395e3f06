"""The Python SDK (`serving.client`) and the `imgserve classify` CLI against the real server, over both transports."""

import csv
import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.client import Analysis, Classification, Client, ImgServeError
from tests.integration.conftest import RunningServer
from tests.paths import EXIF_SAMPLES, IMAGENET_SAMPLES, PROJECT_ROOT, require

pytestmark = pytest.mark.integration

MODEL = "mobilenet_v2_imagenet"
EXPECTED = {
    "n04335435_streetcar.JPEG": "streetcar",
    "n03249569_drum.JPEG": "drum",
    "n02101006_Gordon_setter.JPEG": "Gordon setter",
}
TRANSPORTS = ("http", "grpc")


def _url(server: RunningServer, transport: str) -> str:
    return server.http_url if transport == "http" else f"grpc://{server.grpc_target}"


def _paths() -> list[Path]:
    return [require(IMAGENET_SAMPLES / name) for name in EXPECTED]


def _assert_expected(results: list[Classification]) -> None:
    assert len(results) == len(EXPECTED)
    for result, label in zip(results, EXPECTED.values(), strict=True):
        assert result.model == MODEL
        assert result.predictions[0].label.startswith(label), result.predictions[0]


@pytest.fixture(scope="module")
def clients(server: RunningServer) -> Iterator[dict[str, Client]]:
    opened = {transport: Client(_url(server, transport), timeout=60) for transport in TRANSPORTS}
    yield opened
    for client in opened.values():
        client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_classify_paths_and_bytes(clients: dict[str, Client], transport: str) -> None:
    client = clients[transport]
    _assert_expected(client.classify(_paths(), top_k=3))
    single = client.classify(_paths()[0].read_bytes(), model=MODEL, top_k=2)
    assert len(single) == 1 and len(single[0].predictions) == 2
    assert single[0].predictions[0].label.startswith("streetcar")


def test_classify_equal_across_transports(clients: dict[str, Client]) -> None:
    over_http, over_grpc = (clients[t].classify(_paths(), top_k=5) for t in TRANSPORTS)
    for a, b in zip(over_http, over_grpc, strict=True):
        assert [p.index for p in a.predictions] == [p.index for p in b.predictions]
        assert [p.label for p in a.predictions] == [p.label for p in b.predictions]
        assert all(abs(p.score - q.score) < 1e-6 for p, q in zip(a.predictions, b.predictions, strict=True))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_analyze_returns_classification(clients: dict[str, Client], transport: str) -> None:
    results = clients[transport].analyze(_paths(), top_k=3, fields=["classification"])
    assert all(isinstance(r, Analysis) for r in results)
    _assert_expected([r.classification for r in results])  # type: ignore[misc]
    default_fields = clients[transport].analyze(_paths()[1])
    assert default_fields[0].classification is not None
    assert default_fields[0].classification.predictions[0].label.startswith("drum")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stream_in_order_with_a_corrupt_item(clients: dict[str, Client], transport: str) -> None:
    good = [require(IMAGENET_SAMPLES / n) for n in (*EXPECTED, "n07583066_guacamole.JPEG")]
    truncated = good[0].read_bytes()[:2000]
    items = [good[0], good[1], ("corrupt", truncated), good[2], good[3]]
    results = list(clients[transport].stream(items, top_k=1))
    assert [r.request_id for r in results] == [str(good[0]), str(good[1]), "corrupt", str(good[2]), str(good[3])]
    bad = results[2]
    assert bad.analysis is None and bad.error is not None
    assert bad.error.kind in ("invalid_image", "unsupported_format") and bad.error.code == "INVALID_ARGUMENT"
    labels = [r.analysis.classification.predictions[0].label for r in results if r.ok]  # type: ignore[union-attr]
    assert [label.split(",")[0] for label in labels[:3]] == list(EXPECTED.values())
    assert labels[3].startswith("guacamole")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_stream_is_lazy_and_stops_on_an_unreadable_input(clients: dict[str, Client], transport: str) -> None:
    endless = clients[transport].stream(itertools.cycle([_paths()[0]]), top_k=1)
    assert len([r for r in itertools.islice(endless, 3) if r.ok]) == 3
    endless.close()  # leaving early cancels the stream; the client stays usable
    stream = clients[transport].stream([_paths()[1], _paths()[1].with_name("missing.JPEG")], top_k=1)
    first = next(stream)
    assert first.ok and first.analysis.classification.predictions[0].label.startswith("drum")  # type: ignore[union-attr]
    with pytest.raises(FileNotFoundError):
        next(stream)
    assert clients[transport].classify(_paths()[2], top_k=1)[0].predictions[0].label.startswith("Gordon setter")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unknown_model_is_not_found(clients: dict[str, Client], transport: str) -> None:
    with pytest.raises(ImgServeError) as raised:
        clients[transport].classify(_paths()[0], model="no_such_model")
    assert raised.value.code == "NOT_FOUND" and "no_such_model" in raised.value.message
    assert raised.value.status == (404 if transport == "http" else None)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_models_lists_default_ready(clients: dict[str, Client], transport: str) -> None:
    listing = clients[transport].models()
    assert listing.default_model == MODEL
    info = listing.get(MODEL)
    assert info is not None and info.state == "READY" and info.task == "classification" and info.backend


def test_unreachable_server_is_unavailable() -> None:
    with Client("grpc://127.0.0.1:1", timeout=5, retries=1) as client, pytest.raises(ImgServeError) as raised:
        client.models()
    assert raised.value.code == "UNAVAILABLE"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "serving.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120, check=False)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cli_classify_json(server: RunningServer, transport: str) -> None:
    paths = [str(p) for p in _paths()]
    done = _cli("classify", *paths, "--url", _url(server, transport), "--top-k", "3", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [row["image"] for row in rows] == paths
    for row, label in zip(rows, EXPECTED.values(), strict=True):
        assert row["model"] == MODEL and len(row["predictions"]) == 3
        assert row["predictions"][0]["label"].startswith(label)


def test_cli_table_and_unknown_model(server: RunningServer) -> None:
    path = str(_paths()[0])
    table = _cli("analyze", path, "--url", server.http_url, "--fields", "classification")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:2] == ["IMAGE", "TOP"] and row.startswith("n04335435_streetcar.JPEG") and "streetcar" in row
    failed = _cli("classify", path, "--url", f"grpc://{server.grpc_target}", "--model", "no_such_model")
    assert failed.returncode == 1 and failed.stdout == ""
    message = failed.stderr.strip()
    assert "\n" not in message and "NOT_FOUND" in message and "no_such_model" in message


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cli_reports_a_bad_image_in_its_row_and_answers_the_others(
    server: RunningServer, transport: str, tmp_path: Path
) -> None:
    """A folder with one truncated photo and one text file named like a photo: the command answered nothing
    before (the server refuses a request with a bad image as a whole); each bad file is now its own row."""
    good = _paths()[:2]
    (tmp_path / "photos").mkdir()
    for path in good:
        (tmp_path / "photos" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "photos" / "cut.jpg").write_bytes(good[0].read_bytes()[:4000])
    (tmp_path / "photos" / "notes.png").write_text("not an image")
    out = tmp_path / "results.csv"
    done = _cli("analyze", str(tmp_path / "photos"), "--url", _url(server, transport), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "2 of 4 images failed" in done.stderr
    rows = {Path(row["image"]).name: row for row in csv.DictReader(out.open())}
    assert rows["cut.jpg"]["error"].startswith("invalid_image: ") and rows["notes.png"]["error"].startswith(
        "unsupported_format: "
    )
    for path, label in zip(good, EXPECTED.values(), strict=False):
        assert rows[path.name]["error"] == "" and rows[path.name]["top_label"].startswith(label)
    only_bad = _cli("classify", str(tmp_path / "photos" / "notes.png"), "--url", _url(server, transport), "--json")
    assert only_bad.returncode == 1 and json.loads(only_bad.stdout)[0]["error"]["kind"] == "unsupported_format"


def test_error_kind_and_metadata_match_across_transports(server: RunningServer) -> None:
    gps = (require(EXIF_SAMPLES) / "jpg" / "gps" / "DSCN0010.jpg").read_bytes()
    kinds, makes = set(), set()
    for url in (server.http_url, "grpc://" + server.grpc_target):
        with Client(url) as client:
            with pytest.raises(ImgServeError) as info:
                client.classify(gps, model="no_such_model")
            kinds.add(info.value.kind)
            (analysis,) = client.analyze(gps, fields=["metadata"])
            assert analysis.classification is None
            makes.add(analysis.metadata["exif"]["make"])
    assert kinds == {"unknown_model"}
    assert makes == {"NIKON"}
