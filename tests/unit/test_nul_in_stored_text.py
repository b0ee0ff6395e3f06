"""A NUL byte in a client's text (a job id, an audit filter, an upload's name): PostgreSQL's text holds none, so a
lookup or insert carrying one raised `DataError` and answered 500, and one audit entry with it failed the whole batch
of entries written with it. tests/integration/test_batch_jobs.py checks the same on a real PostgreSQL."""

import pytest
from sqlalchemy import exc as sa_exc

from serving.errors import classify_error
from serving.jobs.intake import MAX_NAME, item_name
from serving.security.audit import AuditEntry

pytestmark = pytest.mark.unit


class _DriverError(Exception):
    pass


def _data_error(params: object) -> sa_exc.DataError:
    return sa_exc.DataError(
        "SELECT ...", params, _DriverError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    )


@pytest.mark.parametrize(
    "params",
    [{"id_1": "ab\x00cd"}, [{"name": "a.jpg"}, {"name": "a\x00b.jpg"}], ("x", {"nested": ["\x00"]})],
    ids=["lookup", "executemany", "nested"],
)
def test_a_database_refusing_a_clients_nul_is_a_400(params: object) -> None:
    info = classify_error(_data_error(params))
    assert (info.http_status, info.grpc_code, info.kind) == (400, "INVALID_ARGUMENT", "bad_request")
    assert "NUL byte" in info.message


def test_any_other_data_error_stays_internal() -> None:
    info = classify_error(_data_error({"id_1": "abcd", "n": 2**80}))
    assert (info.http_status, info.kind) == (500, "internal") and "SELECT" not in info.message


def test_audit_rows_and_item_names_hold_no_nul() -> None:
    entry = AuditEntry(
        action="auth.unauthenticated",
        client="10.0.0.1\x00",
        target="/v1/jobs/a\x00b",
        detail={"path\x00": ["x\x00", 1, {"y": "\x00"}]},
        tenant="t\x00",
        key_id="k\x00",
    )
    row = entry.row()
    assert row["target"] == "/v1/jobs/a\ufffdb" and row["client"] == "10.0.0.1\ufffd"
    assert row["detail"] == {"path\ufffd": ["x\ufffd", 1, {"y": "\ufffd"}]}
    assert row["tenant"] == "t\ufffd" and row["key_id"] == "k\ufffd"
    assert item_name("a\x00b.jpg") == "a\ufffdb.jpg" and len(item_name("\x00" * (MAX_NAME + 5))) == MAX_NAME
