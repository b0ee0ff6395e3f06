"""The lean single-machine Ray (serving.local_ray, serving.serve_control): worker log lines and blocked
modules. The processes stopped and the memory saved are measured by `make bench` (BENCHMARKS.md "Memory")."""

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from serving.local_ray import WorkerLogFollower, install_event_loop_policy, lean_ray_enabled


def follow_once(directory: Path) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    follower = WorkerLogFollower(directory, threading.Event())
    real = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        follower.poll()
        follower.poll()  # nothing new: nothing printed twice
    finally:
        sys.stdout, sys.stderr = real
    return out.getvalue(), err.getvalue()


def test_worker_lines_are_printed_once_with_the_actor_name_and_markers_dropped(tmp_path: Path) -> None:
    (tmp_path / "worker-0a1b-01000000-4242.err").write_text(
        ":job_id:01000000\n:actor_name:ServeReplica:imgserve:Ingress\n"
        '{"ts": 1, "endpoint": "/v1/classify"}\nno newline yet'
    )
    (tmp_path / "worker-0c2d-ffffffff-77.out").write_text(":task_name:deploy_serve\nhello\n")
    (tmp_path / "python-core-worker-0a1b_4242.log").write_text("internal, not followed\n")
    out, err = follow_once(tmp_path)
    assert err == '(ServeReplica:imgserve:Ingress pid=4242) {"ts": 1, "endpoint": "/v1/classify"}\n'
    assert out == "(deploy_serve pid=77) hello\n"


def test_a_line_split_across_reads_is_printed_whole(tmp_path: Path) -> None:
    log = tmp_path / "worker-0a1b-01000000-9.out"
    log.write_text("first half")
    follower = WorkerLogFollower(tmp_path, threading.Event())
    captured = io.StringIO()
    real = sys.stdout
    sys.stdout = captured
    try:
        follower.poll()
        with log.open("a") as handle:
            handle.write(" and the rest\nnext\n")
        follower.poll()
    finally:
        sys.stdout = real
    assert captured.getvalue() == "(pid=9) first half and the rest\n(pid=9) next\n"


def test_lean_ray_is_on_unless_switched_off() -> None:
    assert lean_ray_enabled({})
    assert lean_ray_enabled({"IMGSERVE_LEAN_RAY": "1"})
    assert not lean_ray_enabled({"IMGSERVE_LEAN_RAY": "0"})
    assert not lean_ray_enabled({"IMGSERVE_LEAN_RAY": "off"})


def blocked_in_fresh_python(imported_first: str) -> list:
    code = (
        "import sys, json\n"
        f"{imported_first}\n"
        "from serving.local_ray import block_unused_modules\n"
        "blocked = block_unused_modules()\n"
        "failures = []\n"
        "for name in ('pandas', 'pyarrow'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ModuleNotFoundError as error:\n"
        "        failures.append(str(error))\n"
        "print(json.dumps([blocked, failures]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


def test_blocked_modules_cannot_be_imported() -> None:
    blocked, failures = blocked_in_fresh_python("")
    assert blocked == ["pandas", "pyarrow"]
    assert failures == [f"import of {name} halted; None in sys.modules" for name in blocked]


def test_a_module_already_imported_is_left_alone() -> None:
    blocked, failures = blocked_in_fresh_python("import pyarrow")
    assert blocked == ["pandas"]
    assert failures == ["import of pandas halted; None in sys.modules"]


def test_the_event_loop_policy_is_uvloop_unless_asyncio_is_asked_for() -> None:
    import asyncio

    import uvloop

    try:
        assert install_event_loop_policy({}) == "uvloop"
        loop = asyncio.new_event_loop()
        assert isinstance(loop, uvloop.Loop)
        loop.close()
        assert install_event_loop_policy({"IMGSERVE_EVENT_LOOP": "asyncio"}) == "asyncio"
        loop = asyncio.new_event_loop()
        assert not isinstance(loop, uvloop.Loop)
        loop.close()
        with pytest.raises(ValueError, match="uvloop or asyncio"):
            install_event_loop_policy({"IMGSERVE_EVENT_LOOP": "trio"})
    finally:
        asyncio.set_event_loop_policy(None)
