"""Every documented setting of `imgserve serve` is checked before Ray starts: a bad value is one line, `imgserve:
refusing to start: invalid setting: NAME='value': why`, and exit 2 (found by the operator walkthrough: these were
multi-page tracebacks from the replicas after Ray had started, a pydantic dump ending in a stray "Exposed: .", or
nothing at all)."""

import logging
from pathlib import Path

import pytest

from serving import access_log
from serving.cli import main
from serving.start_checks import check_host
from tests.unit.conftest import RayStarted

pytestmark = pytest.mark.unit

PORTS = ["--http-port", "18141", "--grpc-port", "18142"]
REFUSED = "imgserve: refusing to start: invalid setting: "


def refusal(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line said on stderr (a traceback, or anything beside the line, fails the test)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(REFUSED), lines
    return lines[0]


@pytest.mark.parametrize(
    ("env", "said"),
    [
        # finding 1: the server said it was ready, then answered every request 500
        ({"IMGSERVE_ACCESS_LOG": "/nonexistent/dir/a.log"}, "IMGSERVE_ACCESS_LOG='/nonexistent/dir/a.log'"),
        # finding 2: failures in the replicas after Ray had started
        ({"IMGSERVE_VIPS_THREADS": "abc"}, "IMGSERVE_VIPS_THREADS='abc'"),
        ({"IMGSERVE_ORT_RUN_BATCH": "abc"}, "IMGSERVE_ORT_RUN_BATCH='abc'"),
        ({"IMGSERVE_ORT_RUN_BATCH": "-1"}, "IMGSERVE_ORT_RUN_BATCH='-1'"),
        ({"IMGSERVE_TORCH_THREADS": "two"}, "IMGSERVE_TORCH_THREADS='two'"),
        ({"IMGSERVE_TORCH_THREADS": "-1"}, "IMGSERVE_TORCH_THREADS='-1'"),
        ({"IMGSERVE_QUALITY_THRESHOLDS": "/nonexistent.yaml"}, "IMGSERVE_QUALITY_THRESHOLDS='/nonexistent.yaml'"),
        ({"IMGSERVE_QUALITY_THRESHOLDS": "{tmp}/bad.yaml"}, "IMGSERVE_QUALITY_THRESHOLDS='{tmp}/bad.yaml'"),
        ({"IMGSERVE_DATABASE_URL": "notaurl"}, "IMGSERVE_DATABASE_URL='notaurl'"),
        ({"IMGSERVE_MODEL_REPOSITORY": "/nonexistent"}, "IMGSERVE_MODEL_REPOSITORY='/nonexistent': no such folder"),
        (
            {"IMGSERVE_AUTH": "required", "IMGSERVE_JWT_PUBLIC_KEY_FILE": "/nonexistent.pem"},
            "IMGSERVE_JWT_PUBLIC_KEY_FILE='/nonexistent.pem'",
        ),
        ({"IMGSERVE_AUTH": "required", "IMGSERVE_JWKS_FILE": "/nonexistent.json"}, "IMGSERVE_JWKS_FILE='/nonexistent"),
        # security walkthrough: started, then refused every token ("Could not parse the provided public key")
        (
            {"IMGSERVE_AUTH": "required", "IMGSERVE_JWT_PUBLIC_KEY_FILE": "{tmp}/bad.yaml"},
            "IMGSERVE_JWT_PUBLIC_KEY_FILE='{tmp}/bad.yaml': not a PEM public key",
        ),
        (
            {"IMGSERVE_AUTH": "required", "IMGSERVE_JWKS_FILE": "{tmp}/empty.json"},
            "IMGSERVE_JWKS_FILE='{tmp}/empty.json': it holds no signing key",
        ),
        ({"IMGSERVE_AUTH": "required", "IMGSERVE_JWKS_FILE": "{tmp}/bad.yaml"}, "IMGSERVE_JWKS_FILE='{tmp}/bad.yaml'"),
        ({"IMGSERVE_MALLOC_ARENAS": "abc"}, "IMGSERVE_MALLOC_ARENAS='abc'"),
        # finding 3: a pydantic dump with " Exposed: ." appended
        ({"IMGSERVE_AUTH": "maybe"}, "IMGSERVE_AUTH='maybe'"),
        ({"IMGSERVE_KEY_CACHE_S": "-1"}, "IMGSERVE_KEY_CACHE_S='-1'"),
        ({"IMGSERVE_KEY_CACHE_S": "abc"}, "IMGSERVE_KEY_CACHE_S='abc'"),
        ({"IMGSERVE_JWT_RATE": "fast"}, "IMGSERVE_JWT_RATE='fast'"),
        ({"IMGSERVE_JWT_RATE": "-5"}, "IMGSERVE_JWT_RATE='-5'"),
        ({"IMGSERVE_JWT_BURST": "0"}, "IMGSERVE_JWT_BURST='0'"),
        ({"IMGSERVE_JWT_LEEWAY_S": "-1"}, "IMGSERVE_JWT_LEEWAY_S='-1'"),
        ({"IMGSERVE_JWT_LEEWAY_S": "301"}, "IMGSERVE_JWT_LEEWAY_S='301'"),
        ({"IMGSERVE_RETENTION_DAYS": "0"}, "IMGSERVE_RETENTION_DAYS='0'"),
        ({"IMGSERVE_RETENTION_DAYS": "abc"}, "IMGSERVE_RETENTION_DAYS='abc'"),
        ({"IMGSERVE_RETENTION_SWEEP_S": "-1"}, "IMGSERVE_RETENTION_SWEEP_S='-1'"),
        # finding 6: accepted silently
        ({"IMGSERVE_MALLOC_ARENAS": "-3"}, "IMGSERVE_MALLOC_ARENAS='-3'"),
        ({"IMGSERVE_LEAN_RAY": "maybe"}, "IMGSERVE_LEAN_RAY='maybe'"),
        ({"IMGSERVE_DIRECT_WEBP": "maybe"}, "IMGSERVE_DIRECT_WEBP='maybe'"),  # taken as on
        ({"IMGSERVE_REMOTE_TIMEOUT_S": "abc"}, "IMGSERVE_REMOTE_TIMEOUT_S='abc'"),
        ({"IMGSERVE_REMOTE_TIMEOUT_S": "-1"}, "IMGSERVE_REMOTE_TIMEOUT_S='-1'"),
        ({"IMGSERVE_REMOTE_TIMEOUT_S": "3601"}, "IMGSERVE_REMOTE_TIMEOUT_S='3601'"),
        ({"IMGSERVE_VIPS_THREADS": "-2"}, "IMGSERVE_VIPS_THREADS='-2'"),
        # set but empty: refused like IMGSERVE_MAX_PIXELS= (it was taken as unset by some, a value by others)
        ({"IMGSERVE_ALLOWED_HOSTS": ""}, "IMGSERVE_ALLOWED_HOSTS is set but empty"),
        ({"IMGSERVE_JWT_ISSUER": " "}, "IMGSERVE_JWT_ISSUER is set but empty"),
        ({"IMGSERVE_BATCH_ALLOWED_REMOTE": ""}, "IMGSERVE_BATCH_ALLOWED_REMOTE is set but empty"),
        ({"IMGSERVE_ACCESS_LOG": ""}, "IMGSERVE_ACCESS_LOG is set but empty"),
        ({"IMGSERVE_QUALITY_THRESHOLDS": ""}, "IMGSERVE_QUALITY_THRESHOLDS is set but empty"),
        ({"IMGSERVE_LEAN_RAY": ""}, "IMGSERVE_LEAN_RAY is set but empty"),
    ],
)
def test_a_bad_setting_is_one_line_before_ray_starts(
    no_ray: list,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    env: dict[str, str],
    said: str,
) -> None:
    (tmp_path / "bad.yaml").write_text("- not\n- thresholds\n")
    (tmp_path / "empty.json").write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0", "use": "enc"}]}')
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("{tmp}", str(tmp_path)))
    assert main(["serve", *PORTS]) == 2
    line = refusal(capsys)
    assert said.replace("{tmp}", str(tmp_path)) in line and no_ray == []
    assert "Exposed" not in line  # only the auth-off-beyond-loopback refusal lists what is exposed


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--config", "/nonexistent.yaml"], "--config='/nonexistent.yaml'"),
        (["--config", "{tmp}/bad.yaml"], "--config='{tmp}/bad.yaml'"),
        (["--host", "not a host!"], "--host='not a host!'"),
        (["--host", "bad_host.example"], "--host='bad_host.example'"),
        (["--host", "999.1.1.1"], "--host='999.1.1.1'"),
        (["--host", "[::1]"], "--host='[::1]'"),
    ],
)
def test_a_bad_serve_option_is_one_line_before_ray_starts(
    no_ray: list, capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], said: str
) -> None:
    (tmp_path / "bad.yaml").write_text("applications: [\n")
    assert main(["serve", *PORTS, *(arg.replace("{tmp}", str(tmp_path)) for arg in argv)]) == 2
    assert said.replace("{tmp}", str(tmp_path)) in refusal(capsys) and no_ray == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--http-port", "70000"],
        ["--http-port", "-1"],
        ["--http-port", "0"],
        ["--grpc-port", "65536"],
        ["--grpc-port", "0"],
        ["--num-cpus", "-1"],
        ["--num-cpus", "0"],
        ["--num-cpus", "many"],
    ],
)
def test_an_out_of_range_number_is_an_argument_error(
    no_ray: list, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """Were: `OverflowError: bind(): port must be 0-65535` (a traceback), Ray refusing a negative CPU count after it
    started, and `--num-cpus 0` silently the default."""
    with pytest.raises(SystemExit) as exited:
        main(["serve", *argv])
    assert exited.value.code == 2 and no_ray == []
    err = capsys.readouterr().err
    assert f"argument {argv[0]}: " in err and repr(argv[1]) in err and "Traceback" not in err


@pytest.mark.parametrize(
    "env",
    [
        {"IMGSERVE_LEAN_RAY": "off", "IMGSERVE_VIPS_THREADS": "0", "IMGSERVE_MALLOC_ARENAS": "0"},
        {"IMGSERVE_DIRECT_WEBP": "false"},
        {"IMGSERVE_LEAN_RAY": "Yes", "IMGSERVE_REMOTE_TIMEOUT_S": "3600", "IMGSERVE_ORT_RUN_BATCH": "0"},
        {"IMGSERVE_ACCESS_LOG": "{tmp}/logs/access.log", "IMGSERVE_DATABASE_URL": "postgresql://u@db:5432/imgserve"},
        {"IMGSERVE_ACCESS_LOG": "off", "IMGSERVE_AUTH": "off", "IMGSERVE_RETENTION_DAYS": "0.5"},
    ],
)
def test_valid_settings_reach_ray(no_ray: list, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict) -> None:
    (tmp_path / "logs").mkdir()
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("{tmp}", str(tmp_path)))
    with pytest.raises(RayStarted):
        main(["serve", *PORTS])
    assert len(no_ray) == 1


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "my-host.lan", "db01", "node-1.example.com."]
)
def test_addresses_and_host_names_are_hosts(host: str) -> None:
    check_host(host)


def test_a_log_file_that_cannot_be_opened_never_fails_the_request(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding 1, the replica's side: the access log opened its file on the first request and raised, so every
    request became a plain-text 500 after its work was done. Now the line goes to stderr, with one warning."""
    monkeypatch.setattr(access_log, "_logger", None)
    monkeypatch.setenv("IMGSERVE_ACCESS_LOG", str(tmp_path / "missing" / "a.log"))
    monkeypatch.setattr(logging.getLogger("imgserve.access"), "handlers", [])
    for _ in range(2):
        access_log.log_request("http", "/v1/classify", "m", "200", 0.01, {"decode": 1.0})
    access_log.flush()  # lines are written by the log's own thread, within FLUSH_S
    warnings = [record for record in caplog.records if "IMGSERVE_ACCESS_LOG" in record.getMessage()]
    assert len(warnings) == 1 and "writing the access log to stderr" in warnings[0].getMessage()
    assert capsys.readouterr().err.count('"endpoint": "/v1/classify"') == 2


@pytest.mark.parametrize(
    ("value", "on"), [("0", False), ("false", False), (" OFF ", False), ("no", False), ("1", True)]
)
def test_the_direct_webp_switch_takes_every_word_of_a_switch(value: str, on: bool) -> None:
    """Only `0` turned it off: `false` and `off` were taken as on, as anything else was."""
    from pipelines.convert.libwebp import direct_webp_enabled

    assert direct_webp_enabled({"IMGSERVE_DIRECT_WEBP": value}) is on


def _edited_config(tmp_path: Path, edit: str) -> Path:
    """serve_config.yaml with one edit, as an operator would make it."""
    import yaml

    from tests.paths import PROJECT_ROOT

    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    app = config["applications"][0]
    ingress = next(d for d in app["deployments"] if d["name"] == "Ingress")
    if edit == "port abc":
        config["http_options"]["port"] = "abc"
    elif edit == "port -3":
        config["http_options"]["port"] = -3
    elif edit == "max_inflight 0":
        app["args"]["direct_ingress"] = {"max_inflight": 0}
    elif edit == "num_replicas two":
        ingress["num_replicas"] = "two"
    elif edit == "unknown model":
        app["args"]["models"] = ["mobilenet_v2_imagenet", "nosuchmodel"]
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("edit", "argv", "said"),
    [
        ("port abc", ["--grpc-port", "18142"], "port"),
        ("port -3", ["--grpc-port", "18142"], "port -3"),  # OverflowError from the port check's bind
        ("max_inflight 0", PORTS, "max_inflight"),  # a pydantic traceback
        ("unknown model", PORTS, "nosuchmodel"),  # UnknownModelError, after Ray had started
        ("", [*PORTS, "--host", "10.255.255.1"], "10.255.255.1"),  # an address this machine does not have
    ],
)
def test_a_config_that_cannot_deploy_is_one_line_before_ray_starts(
    no_ray: list, capsys: pytest.CaptureFixture[str], tmp_path: Path, edit: str, argv: list[str], said: str
) -> None:
    """Found by a configuration review helper: each was a Python traceback, the last two only after Ray had
    started (the host's 34 s later)."""
    assert main(["serve", "--config", str(_edited_config(tmp_path, edit)), *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgserve: refusing to start: "), lines
    assert said in lines[0] and no_ray == []


def test_ray_serves_schema_is_one_line_and_checked_where_serve_is_imported(tmp_path: Path) -> None:
    """`num_replicas: two` was a pydantic traceback from the deploy worker. The check imports Ray Serve, so it runs
    in that worker (`imgserve serve`'s own checks must not import Ray: its network settings are read at `import
    ray`, and a first version of this check that imported it there started Ray on the machine's address, which the
    server then refused to run on)."""
    import subprocess
    import sys

    import yaml

    from serving.serve_file import StartRefused, check_serve_schema

    config = yaml.safe_load(_edited_config(tmp_path, "num_replicas two").read_text())
    with pytest.raises(StartRefused, match="num_replicas"):
        check_serve_schema(config)
    check_serve_schema(yaml.safe_load(_edited_config(tmp_path, "").read_text()))
    script = (
        "import sys; from pathlib import Path; from serving.server import load_serve_config; "
        "from serving.serve_file import check_start; "
        "check_start(load_serve_config(Path('serve_config.yaml'), 18141, 18142, 'local')); "
        "print('ray' in sys.modules)"
    )
    from tests.paths import PROJECT_ROOT

    imported = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert imported.stdout.strip() == "False", imported.stderr


@pytest.mark.parametrize("command", [["serve", "--http-port", "18143", "--grpc-port", "18144"], ["convert"]])
def test_a_bad_vips_thread_count_is_one_line_in_a_fresh_process(command: list[str], tmp_path: Path) -> None:
    """libvips' thread count is set when pipelines.convert.vips_io is imported: a bad IMGSERVE_VIPS_THREADS raised
    there, inside the start checks' imports (a traceback, exit 1, from `imgserve serve` and `imgserve convert`),
    before the check that names it could refuse it. (In this test process the module is already imported.)"""
    import os
    import subprocess
    import sys

    from tests.paths import PROJECT_ROOT

    if command == ["convert"]:
        command = ["convert", str(tmp_path), "--to", "webp", "--out", str(tmp_path / "out")]
    env = {**os.environ, "IMGSERVE_VIPS_THREADS": "1.5"}
    done = subprocess.run(
        [sys.executable, "-m", "serving.cli", *command], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "IMGSERVE_VIPS_THREADS='1.5'" in done.stderr.strip().splitlines()[-1]
