"""The two routes the web UI added to the API (issue #20), on the security tests' server (keys required, tenants):
a job's live progress as server-sent events (raw, and through the SDK's `Client.watch`), and a collection image's
thumbnail."""

import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from serving.client import Client
from tests.paths import IMAGENET_SAMPLES, require

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def bearer(secure: dict[str, Any], name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secure['keys'][name]}"}


def events(http: httpx.Client, path: str, headers: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every event of a text/event-stream, read until the server closes it."""
    out: list[tuple[str, dict[str, Any]]] = []
    with http.stream("GET", path, headers=headers, timeout=120) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        name, data = "message", []
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                out.append((name, json.loads("\n".join(data))))
                name, data = "message", []
    return out


def test_progress_streams_until_the_job_ends_and_thumbnails_stay_in_the_tenant(secure: dict[str, Any]) -> None:
    http = secure["http"]
    photos = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[200:224]
    files = [("image", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    submitted = http.post("/v1/batch?stages=classification,quality", files=files, headers=bearer(secure, "a_analyst"))
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()["job_id"]

    assert http.get(f"/v1/jobs/{job}/progress", headers=bearer(secure, "b_analyst")).status_code == 404  # tenant B
    live = events(http, f"/v1/jobs/{job}/progress?interval=0.1", bearer(secure, "a_viewer"))
    names = [name for name, _ in live]
    assert names[-1] == "end" and set(names[:-1]) == {"progress"}, names
    assert live[-1][1] == {"job_id": job, "status": "completed"}
    finished = [data["counts"]["done"] + data["counts"]["failed"] for _, data in live[:-1]]
    assert finished == sorted(finished) and finished[-1] == len(photos)
    changes = {json.dumps({k: v for k, v in d.items() if k != "timings"}, sort_keys=True) for _, d in live[:-1]}
    assert len(changes) == len(live) - 1  # only changes are sent (timings move with the clock alone)
    again = events(http, f"/v1/jobs/{job}/progress", bearer(secure, "a_viewer"))  # a finished job: its state, the end
    assert [name for name, _ in again] == ["progress", "end"] and again[0][1]["progress"] == 1.0

    # The SDK reads the same stream: states as they change, the last one final.
    with Client(secure["server"].http_url, api_key=secure["keys"]["a_analyst"]) as client:
        submitted_again = client.submit_batch(photos[:8])
        states = list(client.watch(submitted_again))
    assert states[-1].status == "completed" and states[-1].done == 8
    assert [s.progress for s in states] == sorted(s.progress for s in states)

    saved = http.post(f"/v1/jobs/{job}/collection?name=thumbs-{job[:8]}", headers=bearer(secure, "a_analyst"))
    assert saved.status_code == 200, saved.text
    collection = saved.json()["id"]
    again = http.post(f"/v1/jobs/{job}/collection?name=thumbs-{job[:8]}", headers=bearer(secure, "a_analyst"))
    assert again.status_code == 200 and again.json()["images"] == saved.json()["images"] == len(photos)
    # Another job with the same file names: its results would have been taken as recorded already and dropped.
    other = http.post("/v1/batch?stages=classification,quality", files=files[:2], headers=bearer(secure, "a_analyst"))
    other_job = other.json()["job_id"]
    assert events(http, f"/v1/jobs/{other_job}/progress?interval=0.1", bearer(secure, "a_viewer"))[-1][1]["status"] == (
        "completed"
    )
    clash = http.post(f"/v1/jobs/{other_job}/collection?name=thumbs-{job[:8]}", headers=bearer(secure, "a_analyst"))
    assert clash.status_code == 400 and "already has 2 image(s)" in clash.json()["error"], clash.text
    listing = http.get(f"/v1/collections/{collection}/images?limit=3", headers=bearer(secure, "a_viewer")).json()
    image_id = listing["images"][0]["id"]
    path = f"/v1/collections/{collection}/images/{image_id}/thumbnail"
    for side in (160, 48):
        thumb = http.get(f"{path}?side={side}", headers=bearer(secure, "a_viewer"))
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(thumb.content)) as decoded:
            assert decoded.format == "JPEG" and max(decoded.size) == side
    assert http.get(path, headers=bearer(secure, "b_analyst")).status_code == 404  # another tenant's collection
    missing = http.get(f"/v1/collections/{collection}/images/999999/thumbnail", headers=bearer(secure, "a_viewer"))
    assert missing.status_code == 404 and missing.json()["kind"] == "unknown_image"
    assert http.get(f"{path}?side=100000", headers=bearer(secure, "a_viewer")).status_code in (400, 422)
    huge = f"/v1/collections/{collection}/images/{10**20}/thumbnail"  # beyond any id: a 4xx, not the database's 500
    assert http.get(huge, headers=bearer(secure, "a_viewer")).status_code in (400, 422)
