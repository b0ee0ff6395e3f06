"""`imgserve serve` refuses a bad configuration before starting anything, in one line naming what to change, and
joins an existing Ray cluster (RAY_ADDRESS) without the arguments only a Ray of its own takes."""

import tomllib

import pytest

from serving.cli import main
from tests.paths import MOBILENET_DIR, PROJECT_ROOT, require
from tests.unit.conftest import RayStarted

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("env", "argv", "said"),
    [
        ({"IMGSERVE_MAX_REQUEST_BYTES": "-1"}, [], "IMGSERVE_MAX_REQUEST_BYTES='-1'"),
        ({"IMGSERVE_MAX_PIXELS": "lots"}, [], "IMGSERVE_MAX_PIXELS='lots'"),
        ({"IMGSERVE_TRAINED_MODELS_DIR": ""}, [], "IMGSERVE_TRAINED_MODELS_DIR is set but empty"),
        ({"IMGSERVE_BATCH_CONCURRENCY": "-3"}, [], "IMGSERVE_BATCH_CONCURRENCY='-3'"),
        ({"IMGSERVE_SHUTDOWN_TIMEOUT_S": "0"}, [], "IMGSERVE_SHUTDOWN_TIMEOUT_S='0'"),
        ({"IMGSERVE_ORT_THREADS": "-4"}, [], "IMGSERVE_ORT_THREADS='-4'"),
        ({"IMGSERVE_WEBHOOK_TIMEOUT_S": "soon"}, [], "IMGSERVE_WEBHOOK_TIMEOUT_S='soon'"),
        ({}, ["--http-port", "18123", "--grpc-port", "18123"], "both on port 18123"),
    ],
)
def test_a_bad_configuration_is_refused_before_anything_starts(
    no_ray: list, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict, argv: list, said: str
) -> None:
    """Were: every HTTP request a 413 (a negative size limit), a traceback in the replicas, the job database in the
    current folder (an empty path), or HTTP and gRPC bound to one port and every gRPC call failing."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    ports = argv or ["--http-port", "18125", "--grpc-port", "18126"]
    assert main(["serve", *ports]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and no_ray == []


def test_joining_a_ray_cluster_passes_no_arguments_of_a_ray_of_its_own(
    no_ray: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`RAY_ADDRESS=<cluster> imgserve serve` always failed: Ray refuses num_cpus when joining a cluster."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(RayStarted):
        main(["serve", "--http-port", "18127", "--grpc-port", "18128"])
    (options,) = no_ray
    assert not {"num_cpus", "include_dashboard", "_temp_dir", "_system_config"} & set(options), options


def test_what_serve_imports_at_start_is_a_dependency_not_a_dev_extra() -> None:
    """psutil (the supervisor) came only with the dev extras: a plain install could not start the server."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert any(requirement.startswith("psutil") for requirement in project["dependencies"])


def test_the_documented_ray_metrics_port_is_the_one_ray_gets(no_ray: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/README.md's `IMGSERVE_RAY_METRICS_PORT=8080 make serve` was read by nothing: the port stayed random."""
    monkeypatch.setenv("IMGSERVE_RAY_METRICS_PORT", "18129")
    with pytest.raises(RayStarted):
        main(["serve", "--http-port", "18130", "--grpc-port", "18131"])
    assert no_ray[0]["_metrics_export_port"] == 18129
    monkeypatch.setenv("IMGSERVE_RAY_METRICS_PORT", "eighty")
    assert main(["serve", "--http-port", "18130", "--grpc-port", "18131"]) == 2


def test_the_graph_placement_deploys_only_the_deployments_its_args_build() -> None:
    """serve_config.yaml configures every stage deployment; with `metadata: false` (or a model left out) Ray Serve
    refused the whole config: "Deployment 'Metadata' does not exist"."""
    require(MOBILENET_DIR)  # the default model must be servable for the application to be composed at all
    import copy
    import json
    import subprocess
    import sys

    from serving.placement import deployment_names
    from serving.serve_control import configure_built_deployments_only
    from serving.server import load_serve_config

    # what the application really builds, from a process of its own (serving.app loads the OIP stubs, whose
    # descriptors clash with tritonclient's in this one: tests/unit/test_edges_in_process.py)
    built_script = (
        "import json, sys\n"
        "from ray.serve._private.build_app import build_app\n"
        "from serving.app import build_app as app\n"
        "print(json.dumps(sorted(d.name for d in build_app(app(json.loads(sys.argv[1])), name='x').deployments)))"
    )

    graph = load_serve_config(PROJECT_ROOT / "serve_config.yaml", placement="graph")
    baseline = set(configure_built_deployments_only(copy.deepcopy(graph)))  # models whose weights are absent here
    for args, left_out in (
        ({}, set()),
        ({"metadata": False}, {"Metadata"}),
        ({"quality": False, "batch_jobs": False}, {"Quality", "BatchWorker"}),
    ):
        config = copy.deepcopy(graph)
        app_args = {**config["applications"][0]["args"], **args}
        config["applications"][0]["args"] = app_args
        assert set(configure_built_deployments_only(config)) == baseline | left_out
        names = {d["name"] for d in config["applications"][0]["deployments"]}
        assert not names & left_out and {"Ingress", "Decoder"} <= names
        done = subprocess.run(
            [sys.executable, "-c", built_script, json.dumps(app_args)], capture_output=True, text=True, check=True
        )
        built = set(json.loads(done.stdout.strip().splitlines()[-1]))
        assert deployment_names(app_args) == built  # the names the app really builds
