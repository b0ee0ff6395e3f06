"""serve_config.yaml checks Ray Serve's schema leaves out (serving.serve_file), said before anything starts: unknown
keys (Ray drops them silently), a config with no listener, and a model batch wait the queue budget always cuts
short. Each goes through `imgserve serve`'s own start (ray.init is never reached) or the KubeRay renderer."""

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving import deploy_render, serve_file
from serving.cli import main
from serving.config.app_args import AppArgs, check_batch_waits
from serving.config.placement_overlay import MODEL_DEPLOYMENT_PREFIX, STAGE_DEPLOYMENTS
from serving.config.settings import ServerSettings
from serving.grpc import proxy_services
from serving.placement import deployment_names
from serving.serve_file import (
    GENERATED_SERVICERS,
    StartRefused,
    check_keys,
    check_start,
    proxy_servicer,
    proxy_warnings,
)
from serving.server import load_serve_config
from tests.paths import MOBILENET_DIR, PROJECT_ROOT, require
from tests.unit.conftest import RayStarted

pytestmark = pytest.mark.unit

SERVE_CONFIG = PROJECT_ROOT / "serve_config.yaml"
PORTS = ["--http-port", "18141", "--grpc-port", "18142"]


def serve_config(tmp_path: Path, edit: Any) -> Path:
    """serve_config.yaml with `edit(config)` applied, written to a temporary file."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    edit(config)
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def imgserve_app(config: dict[str, Any]) -> dict[str, Any]:
    (app,) = [app for app in config["applications"] if app["import_path"] == "serving.app:build_app"]
    return app


def deployment(config: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [d for d in imgserve_app(config)["deployments"] if d["name"] == name]
    return found


def refused(path: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """What `imgserve serve --config path` says on stderr when it refuses to start (exit status 2)."""
    assert main(["serve", "--config", str(path), *PORTS, *argv]) == 2
    err = capsys.readouterr().err
    assert "imgserve: refusing to start:" in err and "Traceback" not in err
    return " ".join(err.split())


# ---- unknown keys ----


def test_the_copied_ray_serve_keys_are_ray_serves_schema() -> None:
    """serving.serve_file lists Ray Serve's keys without importing Serve in `imgserve serve`'s process: a Ray
    upgrade that adds or renames one must update the copy."""
    from ray.serve import schema
    from ray.serve.config import AutoscalingConfig

    def fields(model: Any) -> set[str]:
        return {field.alias or name for name, field in model.model_fields.items()}

    assert serve_file.SERVE_DEPLOY_KEYS == fields(schema.ServeDeploySchema)
    assert serve_file.HTTP_OPTIONS_KEYS == fields(schema.HTTPOptionsSchema)
    assert serve_file.GRPC_OPTIONS_KEYS == fields(schema.gRPCOptionsSchema)
    assert serve_file.LOGGING_CONFIG_KEYS == fields(schema.LoggingConfig)
    assert serve_file.APPLICATION_KEYS == fields(schema.ServeApplicationSchema)
    assert serve_file.DEPLOYMENT_KEYS == fields(schema.DeploymentSchema)
    assert serve_file.AUTOSCALING_CONFIG_KEYS == fields(AutoscalingConfig)
    assert serve_file.RAY_ACTOR_OPTIONS_KEYS == fields(schema.RayActorOptionsSchema)


def test_ray_serve_itself_drops_a_misspelt_key() -> None:
    """Why the check exists: Ray's schema takes the typo and leaves the setting at its default."""
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load(SERVE_CONFIG.read_text())
    ingress = deployment(config, "Ingress")
    ingress["max_ongoing_request"] = ingress.pop("max_ongoing_requests")
    parsed = ServeDeploySchema.model_validate(config).applications[0].deployments[0]
    assert parsed.name == "Ingress" and "max_ongoing_requests" not in parsed.model_fields_set  # left at Ray's default


def test_the_shipped_configs_have_no_unknown_key() -> None:
    check_keys(yaml.safe_load(SERVE_CONFIG.read_text()), "serve_config.yaml")
    overrides = yaml.safe_load((PROJECT_ROOT / "deploy" / "kuberay" / "serve_overrides.yaml").read_text())
    deploy_render.cluster_serve_config(yaml.safe_load(SERVE_CONFIG.read_text()), overrides)


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        (
            lambda c: deployment(c, "Ingress").update(max_ongoing_request=5),
            "applications[imgserve].deployments[Ingress].max_ongoing_request (did you mean max_ongoing_requests?)",
        ),
        (
            lambda c: deployment(c, "Decoder")["autoscaling_config"].update(max_replica=4),
            "deployments[Decoder].autoscaling_config.max_replica (did you mean max_replicas?)",
        ),
        (
            lambda c: deployment(c, "Ingress")["ray_actor_options"].update(num_cpu=1),
            "deployments[Ingress].ray_actor_options.num_cpu (did you mean num_cpus?)",
        ),
        (lambda c: c["http_options"].update(prot=8001), "http_options.prot (did you mean port?)"),
        (lambda c: c.update(proxy_locaton="EveryNode"), "proxy_locaton (did you mean proxy_location?)"),
        (
            lambda c: imgserve_app(c)["args"].update(default_modle="resnet50"),
            "applications[imgserve].args.default_modle (did you mean default_model?)",
        ),
        (
            lambda c: imgserve_app(c)["args"].update(direct_ingress={"max_queue_wait": 50}),
            "args.direct_ingress.max_queue_wait (did you mean max_queue_wait_ms?)",
        ),
        (
            lambda c: deployment(c, "model-mobilenet_v2_imagenet").update(
                user_config={"batching": {"batch_wait_timeout": 2}}
            ),
            "user_config.batching.batch_wait_timeout (did you mean batch_wait_timeout_ms?)",
        ),
        (lambda c: imgserve_app(c)["args"].update(qualty=False), "args.qualty (did you mean quality?)"),
        (
            lambda c: deployment(c, "Ingress").update(name="Ingres"),
            "deployments[Ingres] (no such deployment: did you mean Ingress?",
        ),
        (lambda c: deployment(c, "Decoder").update(name="decode"), "deployments[decode] (no such deployment"),
    ],
    ids=[
        "deployment",
        "autoscaling",
        "actor-options",
        "http",
        "top-level",
        "arg",
        "direct-ingress",
        "user-config",
        "bool-arg",
        "deployment-name",
        "deployment-name-no-guess",
    ],
)
def test_imgserve_serve_refuses_an_unknown_key_with_its_path_and_the_closest_known_one(
    no_ray: list[dict[str, object]], tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: Any, said: str
) -> None:
    """Were: the setting silently dropped (Ray Serve), or, for imgserve's own args, a deploy failing after Ray
    started."""
    err = refused(serve_config(tmp_path, edit), capsys)
    assert said in err and "silently dropped" in err


def test_every_deployment_the_graph_builds_is_a_known_name() -> None:
    """The names the key check takes (STAGE_DEPLOYMENTS, model-<model>) cover what the graph placement builds."""
    require(MOBILENET_DIR)
    names = deployment_names({"placement": "graph"})
    assert {n for n in names if not n.startswith(MODEL_DEPLOYMENT_PREFIX)} == set(STAGE_DEPLOYMENTS)


def test_an_unknown_key_without_a_close_match_is_named_without_a_guess(tmp_path: Path) -> None:
    path = serve_config(tmp_path, lambda c: c.update(zzz=1))
    with pytest.raises(StartRefused, match=r"unknown key zzz\. Ray Serve ignores"):
        load_serve_config(path)


def test_the_kuberay_renderer_refuses_a_misspelt_override() -> None:
    overrides = {"applications": [{"name": "imgserve", "deployments": [{"name": "Decoder", "num_replica": 2}]}]}
    with pytest.raises(StartRefused, match=r"deployments\[Decoder\]\.num_replica \(did you mean num_replicas\?\)"):
        deploy_render.cluster_serve_config(yaml.safe_load(SERVE_CONFIG.read_text()), overrides)


# ---- no listener ----


def test_direct_ingress_null_with_the_proxy_disabled_is_refused(
    no_ray: list[dict[str, object]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Were: the overlay kept the explicit null (setdefault), disabled Ray's proxy and started a server no client
    could reach ("imgserve is ready: no listener ...")."""
    path = serve_config(tmp_path, lambda c: imgserve_app(c)["args"].update(direct_ingress=None))
    err = refused(path, capsys)
    assert "args.direct_ingress is null" in err and "--ray-proxy" in err
    # with Ray's proxy kept, null means what AppArgs documents: clients go through the proxy
    check_start(load_serve_config(path, placement="local", ray_proxy=True))


def test_direct_listeners_without_a_port_are_refused_too(tmp_path: Path) -> None:
    path = serve_config(
        tmp_path, lambda c: imgserve_app(c)["args"].update(direct_ingress={"http_port": None, "grpc_port": None})
    )
    with pytest.raises(StartRefused, match="no client could connect"):
        check_start(load_serve_config(path, placement="local"))


# ---- gRPC servicer functions and the request timeout for Ray's proxy ----

BODY_DEADLINE_S = ServerSettings.model_fields["body_read_timeout_s"].default


def test_a_config_naming_the_generated_servicers_is_warned_about_behind_rays_proxy_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped config names imgserve's (no warning); one copied before them names the generated functions, which
    serve but let the proxy answer a malformed message UNKNOWN and end a refused stream OK."""
    assert not proxy_warnings(load_serve_config(SERVE_CONFIG, placement="graph", ray_proxy=True), BODY_DEADLINE_S)
    old = serve_config(tmp_path, lambda c: c["grpc_options"].update(grpc_servicer_functions=list(GENERATED_SERVICERS)))
    warnings = proxy_warnings(load_serve_config(old, placement="graph", ray_proxy=True), BODY_DEADLINE_S)
    assert len(warnings) == 3 and all("UNKNOWN" in w for w in warnings)
    assert all(proxy_servicer(name) in w for name, w in zip(GENERATED_SERVICERS, warnings, strict=True))
    named = [proxy_servicer(name).rsplit(".", 1)[1] for name in GENERATED_SERVICERS]
    assert all(callable(getattr(proxy_services, function)) for function in named)  # the functions exist
    assert not proxy_warnings(load_serve_config(old, placement="local"), BODY_DEADLINE_S)  # no proxy: the listeners'
    deploy_render.cluster_serve_config(yaml.safe_load(old.read_text()), None)  # KubeRay keeps the proxy
    assert capsys.readouterr().err.count("warning: grpc_options.grpc_servicer_functions names") == 3


def test_a_proxy_timeout_not_above_the_body_deadline_is_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Behind Ray's proxy a slow upload met the proxy's request_timeout_s (60 s) before imgserve's 60 s body deadline
    and got Ray's plain-text 408 (checked by hand: `--ray-proxy`, a body trickled for 60 s). The shipped config keeps
    the proxy's timeout above it (90 s: imgserve's JSON 408 `timeout` then, checked the same way); a config at or
    below the deadline is warned about, by `imgserve serve` and the KubeRay renderer."""
    shipped = load_serve_config(SERVE_CONFIG, placement="graph", ray_proxy=True)
    assert shipped["http_options"]["request_timeout_s"] > BODY_DEADLINE_S
    assert not proxy_warnings(shipped, BODY_DEADLINE_S)
    at_deadline = serve_config(tmp_path, lambda c: c["http_options"].update(request_timeout_s=60))
    (warning,) = proxy_warnings(load_serve_config(at_deadline, placement="graph", ray_proxy=True), 60.0)
    assert "request_timeout_s is 60 s" in warning and "plain-text 408" in warning
    assert proxy_warnings(load_serve_config(at_deadline, placement="graph", ray_proxy=True), 30.0) == []
    assert not proxy_warnings(load_serve_config(at_deadline, placement="local"), 60.0)  # no proxy
    deploy_render.cluster_serve_config(yaml.safe_load(at_deadline.read_text()), None)
    assert "warning: http_options.request_timeout_s is 60 s" in capsys.readouterr().err


# ---- batch wait against the queue budget ----


def test_a_lone_request_under_a_batch_wait_longer_than_its_budget_is_always_refused() -> None:
    """Why: the batch queue waits for company, then sheds the request whose queue budget passed meanwhile."""
    from serving.admission import InflightLimit
    from serving.errors import OverloadedError
    from serving.stages.batching import BatchQueue

    async def lone_request() -> None:
        limit = InflightLimit(10, max_queue_wait_s=0.05)

        async def run(items: list[Any]) -> list[int]:
            return [queued.item for queued in items]

        assert limit.try_enter()
        await BatchQueue(run, 16, batch_wait_timeout_s=0.2).submit(1, limit.deadline())

    with pytest.raises(OverloadedError, match="queue budget exceeded"):
        asyncio.run(lone_request())


def test_an_args_batch_wait_over_the_queue_budget_is_refused_naming_both(
    no_ray: list[dict[str, object]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def edit(config: dict[str, Any]) -> None:
        args = imgserve_app(config)["args"]
        args.update(batching={"batch_wait_timeout_ms": 2000}, direct_ingress={"max_queue_wait_ms": 1000})

    err = refused(serve_config(tmp_path, edit), capsys, "--placement", "local")
    assert "args.batching.batch_wait_timeout_ms=2000" in err
    assert "args.direct_ingress.max_queue_wait_ms=1000" in err and "503" in err


def test_a_model_configs_batch_wait_over_the_queue_budget_is_refused_naming_the_file(
    no_ray: list[dict[str, object]], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model's own config.yaml applies when the args' batching does not set the wait."""
    repository = tmp_path / "models"
    shutil.copytree(PROJECT_ROOT / "models" / "mobilenet_v2_imagenet", repository / "mobilenet_v2_imagenet")
    config_file = repository / "mobilenet_v2_imagenet" / "config.yaml"
    model = yaml.safe_load(config_file.read_text())
    model["batching"]["batch_wait_timeout_ms"] = 300
    config_file.write_text(yaml.safe_dump(model, sort_keys=False))
    monkeypatch.setenv("IMGSERVE_MODEL_REPOSITORY", str(repository))
    monkeypatch.setenv("IMGSERVE_TRAINED_MODELS_DIR", str(tmp_path / "trained"))

    def edit(budget_ms: float) -> Any:
        return lambda c: imgserve_app(c)["args"].update(
            batching={"max_batch_size": 8}, direct_ingress={"max_queue_wait_ms": budget_ms}
        )

    err = refused(serve_config(tmp_path, edit(250)), capsys, "--placement", "local")
    assert "batching.batch_wait_timeout_ms of model 'mobilenet_v2_imagenet'=300" in err and str(config_file) in err
    assert "args.direct_ingress.max_queue_wait_ms=250" in err
    # a budget above the wait starts (ray.init is reached)
    with pytest.raises(RayStarted):
        main(["serve", "--config", str(serve_config(tmp_path, edit(301))), *PORTS, "--placement", "local"])


def test_the_budget_binds_only_where_the_models_run_in_the_admitting_replica() -> None:
    waits = {"m": (2000.0, "models/m/config.yaml")}
    local = {"placement": "local", "direct_ingress": {"max_queue_wait_ms": 1000}}
    with pytest.raises(ValueError, match=r"model 'm'=2000 \(models/m/config.yaml\)"):
        check_batch_waits(AppArgs.model_validate(local), waits)
    check_batch_waits(AppArgs.model_validate({**local, "batching": {"batch_wait_timeout_ms": 10}}), waits)
    check_batch_waits(AppArgs.model_validate({**local, "direct_ingress": {"max_queue_wait_ms": None}}), waits)
    check_batch_waits(AppArgs.model_validate({"placement": "local"}), waits)  # Ray's proxy: no budget
    check_batch_waits(AppArgs.model_validate({**local, "placement": "graph"}), waits)  # a deployment's own queue


def test_an_application_deployed_without_imgserve_serve_refuses_it_where_it_is_composed(tmp_path: Path) -> None:
    """`serve deploy` of a hand-made config skips `imgserve serve`'s check: the application's build refuses it."""
    from serving.placement import compose
    from tests.unit.tiny_models import tiny_settings

    settings = tiny_settings(tmp_path)  # the tiny model batches with batch_wait_timeout_ms 1
    args = {"placement": "local", "default_model": "tiny", "direct_ingress": {"max_queue_wait_ms": 1}}
    with pytest.raises(ValueError, match=r"model 'tiny'=1 \(.*config.yaml\).*max_queue_wait_ms=1\b"):
        compose(AppArgs.model_validate(args), settings)
    args["direct_ingress"] = {"max_queue_wait_ms": 2}
    assert compose(AppArgs.model_validate(args), settings).direct_ingress is not None


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan"])
def test_a_bad_deploy_timeout_is_refused_before_ray_starts(
    no_ray: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    """Were: read only after Ray started ("could not convert string to float" in a traceback, Ray stopped again);
    0 or less gave up on the deploy at once."""
    monkeypatch.setenv("IMGSERVE_DEPLOY_TIMEOUT_S", value)
    assert f"IMGSERVE_DEPLOY_TIMEOUT_S={value!r}: expected seconds > 0" in refused(SERVE_CONFIG, capsys)


def test_a_repository_model_config_that_is_no_model_config_is_one_line_before_ray(
    no_ray: list[dict[str, object]], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each replica's scan refused it, after Ray had started: a traceback and exit 1 (a `mean` of two values)."""
    from tests.unit.tiny_models import tiny_settings

    settings = tiny_settings(tmp_path / "t")
    config = settings.model_repository / "quality_mos" / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["preprocessing"]["mean"] = [0.5, 0.5]
    config.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("IMGSERVE_MODEL_REPOSITORY", str(settings.model_repository))
    err = refused(serve_config(tmp_path, lambda c: None), capsys)
    assert "quality_mos/config.yaml: preprocessing.mean.2: Field required" in err, err
    assert str(tmp_path) not in err and not no_ray
