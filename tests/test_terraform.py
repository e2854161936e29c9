"""Terraform (terraform/) against the code: it parses, it declares everything the code uses, it
points at nothing that does not exist, checkov passes, and the function archives are self-contained.

Terraform itself cannot run here (no binary, no GCP), so these static checks are what keeps the
deployment honest when topics, routes, functions, settings or schedules change in the code.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any, get_args

import functions_framework
import hcl2
import pytest

from batchcast.core import layout, messages
from batchcast.core.config import BUILTIN_PROFILES, load_profile, profile_names
from batchcast.core.events import PUBSUB_PUBLISHED, message_from_event
from batchcast.core.messages import InvalidMessage, ScheduleTick, Topic
from batchcast.core.settings import Settings
from batchcast.entrypoints import runtime
from batchcast.entrypoints.wiring import FUNCTIONS, ROUTES

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
sys.path.insert(0, str(ROOT / "scripts"))
import build_functions  # noqa: E402


def _plain(value: Any) -> Any:
    """python-hcl2 keeps string literals quoted ('"x"'): unquote keys and values, recursively."""
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items() if k not in ("__is_block__", "__comments__")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:  # a template with quotes inside its interpolations
            return value[1:-1]
    return value


def _load(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return _plain(hcl2.load(handle))


@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    """Every top-level block of terraform/*.tf: locals merged, variables and resources by name."""
    merged: dict[str, Any] = {"locals": {}, "variable": {}, "resource": {}}
    for path in sorted(TERRAFORM.glob("*.tf")):
        document = _load(path)
        for block in document.get("locals", []):
            merged["locals"].update(block)
        for block in document.get("variable", []):
            merged["variable"].update(block)
        for block in document.get("resource", []):
            for kind, named in block.items():
                merged["resource"].setdefault(kind, {}).update(named)
    return merged


@pytest.fixture(scope="module")
def tf_text() -> str:
    return "\n".join(p.read_text() for p in sorted(TERRAFORM.glob("*.tf")))


def test_every_tf_file_parses() -> None:
    files = sorted(TERRAFORM.glob("*.tf"))
    assert len(files) >= 10
    for path in files:
        assert _load(path), f"{path.name} parsed to nothing"


def test_topics_and_dead_letters_match_the_message_contract(tf: dict, tf_text: str) -> None:
    assert sorted(tf["locals"]["topics"]) == sorted(t.value for t in Topic)
    # Dead-letter topics are derived from the same list, named as Topic.dead_letter names them.
    assert '"${each.key}-dlq"' in tf_text
    assert {f"{t}-dlq" for t in tf["locals"]["topics"]} == {t.dead_letter for t in Topic}


def test_status_reads_the_dead_letter_subscriptions_terraform_creates(tf: dict, tmp_path: Path) -> None:
    """`batchcast status` on GCP pulls from the subscriptions Terraform keeps dead letters in."""
    from batchcast.backends.gcp import PubSubBus
    from batchcast.ops import status

    held = tf["resource"]["google_pubsub_subscription"]["dead_letter"]
    assert held["topic"] == "${google_pubsub_topic.dead_letter[each.key].id}"
    created = {held["name"].replace("${each.key}", topic) for topic in tf["locals"]["topics"]}
    pulled: list[str] = []

    class Subscriber:  # what PubSubBus.dead_letters asks of the Pub/Sub client
        def subscription_path(self, project: str, name: str) -> str:
            return f"projects/{project}/subscriptions/{name}"

        def pull(self, request: dict, timeout: float, **options: Any) -> Any:
            pulled.append(request["subscription"].rsplit("/", 1)[-1])
            return type("Response", (), {"received_messages": []})()

    bus = PubSubBus.__new__(PubSubBus)  # no real clients: only what status calls
    bus.project, bus.subscriber = "p", Subscriber()
    status.collect(runtime.embedded(tmp_path).ports.blobs, bus.dead_letters)
    assert sorted(pulled) == sorted(created) and len(created) == len(Topic)


def test_subscriptions_are_the_routes(tf: dict) -> None:
    declared = {name: (r["topic"], r["function"]) for name, r in tf["locals"]["routes"].items()}
    assert declared == {r.subscription: (r.topic.value, r.function) for r in ROUTES}
    subscription = tf["resource"]["google_pubsub_subscription"]["route"]
    [policy] = subscription["dead_letter_policy"]
    assert policy["max_delivery_attempts"] == 5
    assert subscription["retain_acked_messages"] is True
    [retry] = subscription["retry_policy"]
    assert retry["minimum_backoff"] and retry["maximum_backoff"]
    # Every function times out before the ack deadline, so a push is answered before redelivery.
    assert all(
        fn["timeout"] < subscription["ack_deadline_seconds"] for fn in tf["locals"]["functions"].values()
    )


def test_functions_exist_with_their_entry_points(tf: dict) -> None:
    declared = set(tf["locals"]["functions"])
    on_disk = set(build_functions.function_names())
    assert declared == on_disk == set(FUNCTIONS)
    [build] = tf["resource"]["google_cloudfunctions2_function"]["fn"]["build_config"]
    assert build["entry_point"] == "${each.key}"  # the target is the function's own name
    for name in declared:
        tree = ast.parse((ROOT / "functions" / name / "main.py").read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)} | {
            t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
        }
        assert name in defined, f"functions/{name}/main.py does not define {name}"
    for fn in tf["locals"]["functions"].values():
        assert isinstance(fn["timeout"], int) and fn["timeout"] <= 540


def _step_source(name: str) -> str:
    """A step's source plus that of each service function it calls as ``<module>.<function>(``,
    for the services (``batchcast.ops``) a step imports: where a step's shared work, such as building
    predict requests, lives since steps stopped importing each other."""
    step = ROOT / "shared" / "batchcast" / "steps" / f"{name}.py"
    if not step.exists():
        return ""
    source = step.read_text()
    parts = [source]
    for modules in re.findall(r"^from batchcast\.ops import ([\w, ]+)$", source, re.M):
        for module in (m.strip() for m in modules.split(",")):
            path = ROOT / "shared" / "batchcast" / "ops" / f"{module}.py"
            called = set(re.findall(rf"\b{module}\.(\w+)\(", source))
            text = path.read_text()
            parts += [
                ast.get_source_segment(text, node) or ""
                for node in ast.parse(text).body
                if isinstance(node, ast.FunctionDef) and node.name in called
            ]
    return "\n".join(parts)


def test_publishers_are_derived_from_the_steps(tf: dict) -> None:
    """A function may publish exactly to the topics of the messages its step constructs."""
    union = get_args(messages.Message)[0]  # Annotated[Union[...], discriminator]
    # A TrainRequest travels as a job's arguments, not on a topic.
    classes = {cls.__name__: cls.topic.value for cls in get_args(union) if hasattr(cls, "topic")}
    assert len(classes) == len(Topic)
    for name, fn in tf["locals"]["functions"].items():
        source = _step_source(name)
        built = {topic for cls, topic in classes.items() if re.search(rf"\b{cls}\(", source)}
        assert set(fn["publishes"]) == built, name
    assert tf["locals"]["functions"]["notify"]["publishes"] == []


def _code_settings() -> set[str]:
    """Every BATCHCAST_* name the deployed code reads: Settings fields and literal names."""
    names = {f"BATCHCAST_{field.upper()}" for field in Settings.model_fields}
    sources = [*(ROOT / "shared").rglob("*.py"), *(ROOT / "functions").glob("*/main.py")]
    if (ROOT / "api").is_dir():
        sources += list((ROOT / "api").rglob("*.py"))
    for path in sources:
        names |= set(re.findall(r"\bBATCHCAST_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return names


def test_every_setting_is_declared_and_every_declared_setting_is_read(tf: dict) -> None:
    local = tf["locals"]
    declared = set(local["common_env"]) | set(local["settings_not_deployed"])
    for extra in (*local["extra_env"].values(), *local["secret_env"].values()):
        declared |= set(extra)
    code = _code_settings()
    assert code - declared == set(), "settings the code reads but Terraform does not declare"
    assert declared - code == set(), "Terraform sets variables no code reads"
    # Secrets come from Secret Manager, never from plain environment values.
    plain = set(local["common_env"]).union(*local["extra_env"].values())
    assert {"BATCHCAST_SMTP_PASSWORD", "BATCHCAST_API_TOKENS"} & plain == set()
    assert local["extra_env"]["train_trigger"]["BATCHCAST_TRAIN_JOB"] == "${local.train_job}"


def test_schedules_are_every_profiles_schedules(tf: dict) -> None:
    declared = sorted(
        (s["dataset"], s["cron"], s["time_zone"], tuple(s["actions"]))
        for s in tf["variable"]["schedules"]["default"]
    )
    wanted = sorted(
        (p.name, entry.cron, p.timezone, tuple(entry.actions))
        for p in map(load_profile, profile_names())
        for entry in p.schedule
    )
    assert declared == wanted
    assert sorted(tf["variable"]["profiles"]["default"]) == sorted(BUILTIN_PROFILES)
    # One job per entry: the job keys must not collide.
    keys = {f"{s['dataset']}-{'-'.join(s['actions'])}" for s in tf["variable"]["schedules"]["default"]}
    assert len(keys) == len(declared)


def test_scheduler_body_decodes_to_a_tick(tf_text: str) -> None:
    """The body Terraform's jobs publish, plus Pub/Sub's publish time, is a valid ScheduleTick."""
    body_block = re.search(r"data = base64encode\(jsonencode\(\{(.*?)\}\)\)", tf_text, re.S)
    assert body_block, "scheduler.tf publishes a jsonencode()d body"
    keys = set(re.findall(r"^\s*(\w+)\s*=", body_block.group(1), re.M))
    assert keys == {"schema_version", "kind", "dataset", "actions"}
    body = {"schema_version": 1, "kind": "schedule", "dataset": "bikeshare", "actions": ["predict"]}
    envelope = {
        "message": {
            "data": base64.b64encode(json.dumps(body).encode()).decode(),
            "attributes": {"kind": "schedule", "dataset": "bikeshare"},
            "messageId": "1",
            "publishTime": "2026-03-02T14:00:02.417Z",
        }
    }
    tick = message_from_event(PUBSUB_PUBLISHED, envelope)
    assert isinstance(tick, ScheduleTick)
    assert tick.logical_time.isoformat() == "2026-03-02T14:00:00+00:00"
    # A redelivery carries the same publish time, so the same idempotency key.
    assert message_from_event(PUBSUB_PUBLISHED, envelope).idempotency_key == tick.idempotency_key
    # A tick that says when it is for (batchcast tick, a replay) keeps its own time.
    pinned = {**body, "logical_time": "2026-03-01T06:00:00-08:00"}
    envelope["message"]["data"] = base64.b64encode(json.dumps(pinned).encode()).decode()
    assert message_from_event(PUBSUB_PUBLISHED, envelope).logical_time.isoformat() == pinned["logical_time"]
    # Without a publish time there is nothing to take the time from: the contract rejects it.
    envelope["message"]["data"] = base64.b64encode(json.dumps(body).encode()).decode()
    del envelope["message"]["publishTime"]
    with pytest.raises(InvalidMessage):
        message_from_event(PUBSUB_PUBLISHED, envelope)


def test_push_delivery_reaches_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a Terraform push subscription POSTs (a bare Pub/Sub envelope at /projects/P/topics/T)
    is turned into a messagePublished CloudEvent by functions-framework and runs the step."""
    monkeypatch.setenv("BATCHCAST_ROOT", str(tmp_path / "bucket"))
    monkeypatch.delenv("BATCHCAST_BACKEND", raising=False)
    monkeypatch.setenv("BATCHCAST_NOW", "2026-03-01T23:31:00Z")  # within the event-age limit
    runtime.from_env.cache_clear()
    try:
        app = functions_framework.create_app("notify", str(ROOT / "functions" / "notify" / "main.py"))
        tick = {"schema_version": 1, "kind": "schedule", "dataset": "retail", "actions": ["notify"]}
        push = {
            "message": {
                "data": base64.b64encode(json.dumps(tick).encode()).decode(),
                "attributes": {"kind": "schedule", "dataset": "retail"},
                "messageId": "42",
                "publishTime": "2026-03-01T23:30:00.120Z",
            },
            "subscription": "projects/p/subscriptions/notify--schedule",
        }
        response = app.test_client().post("/projects/p/topics/schedule", json=push)
        assert response.status_code == 200, response.data
        [record] = (tmp_path / "bucket" / "runs").rglob("*.json")
        run = json.loads(record.read_text())
        assert run["function"] == "notify" and run["status"] != "failed"
        assert run["message"]["logical_time"] == "2026-03-01T23:30:00+00:00"
    finally:
        runtime.from_env.cache_clear()


def test_bucket_grants_name_existing_prefixes(tf: dict) -> None:
    known = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and v.endswith("/")}
    known |= {layout.FRESHNESS.rsplit("/", 1)[0] + "/", layout.MANAGERS.rsplit("/", 1)[0] + "/"}
    principals = set(tf["locals"]["functions"]) | {"api", "train_job"}
    access = tf["locals"]["bucket_access"]
    assert set(access) == principals
    for principal, levels in access.items():
        for level, prefixes in levels.items():
            assert set(prefixes) <= known, f"{principal}.{level} names unknown prefixes"
    # Only partition reads raw/; only ingest writes it; nothing but partition's trigger watches it.
    assert [p for p, a in access.items() if "raw/" in a["create"] + a["update"]] == ["ingest"]
    assert [p for p, a in access.items() if "raw/" in a["read"]] == ["partition"]


def _emitted_metrics() -> set[str]:
    source = "\n".join(p.read_text() for p in (ROOT / "shared").rglob("*.py"))
    return set(re.findall(r"""["']metric["']\s*:\s*["'](batchcast_[a-z_]+)["']""", source))


def test_log_metrics_filter_on_lines_the_code_writes(tf_text: str) -> None:
    filtered = set(re.findall(r'jsonPayload\.metric=\\"(batchcast_[a-z_]+)\\"', tf_text))
    assert filtered == {"batchcast_run", "batchcast_freshness"}
    assert filtered <= _emitted_metrics()


def test_function_archive_is_self_contained(tmp_path: Path) -> None:
    """Unzip one archive and import its main with only that folder (and pip's packages) on the path."""
    archive = build_functions.build("partition", tmp_path / "dist")
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        zipped.extractall(tmp_path / "src")
        requirements = zipped.read("requirements.txt").decode()
    assert {
        "main.py",
        "requirements.txt",
        "batchcast/__init__.py",
        "batchcast/steps/partition.py",  # imported by name (wiring.step_for), found all the same
        "batchcast/core/profiles/retail.toml",
    } <= names
    assert any(n.startswith("batchcast/core/schemas/") and n.endswith(".avsc") for n in names)
    assert not any("__pycache__" in n for n in names)
    # Only what partition's entry point can import: no developer tools, no other function's step.
    assert not any(n.startswith("batchcast/tools/") for n in names), sorted(names)
    assert "batchcast/steps/predict.py" not in names and "batchcast/ml/model.py" not in names
    # Pinned with hashes from the lock, and only the distributions partition imports (and theirs).
    pins = dict(re.findall(r"^([a-z0-9._-]+)==(\S+)", requirements, re.M))
    assert {"functions-framework", "google-cloud-storage", "pandas", "fastavro"} <= pins.keys()
    assert not pins.keys() & {"scikit-learn", "skops", "typer", "rich", "matplotlib", "psutil"}
    assert all("--hash=sha256:" in block for block in requirements.split("==")[1:])
    check = (
        "import sys; sys.path.insert(0, sys.argv[1]); import main, batchcast;"
        "assert batchcast.__file__.startswith(sys.argv[1]), batchcast.__file__;"
        "assert callable(main.partition); print('ok')"
    )
    src = str(tmp_path / "src")
    result = subprocess.run(
        [sys.executable, "-I", "-c", check, src], cwd=src, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def _tree_copy(destination: Path) -> build_functions.Tree:
    """What the archives are built from, copied, so a test can edit it."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("functions", "shared", "requirements"):
        shutil.copytree(ROOT / folder, destination / folder, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", destination)
    return build_functions.Tree(destination)


def test_archive_changes_only_with_what_its_function_imports(tmp_path: Path) -> None:
    """Terraform names each uploaded archive by its MD5: an unrelated edit must not redeploy it."""
    tree = _tree_copy(tmp_path / "tree")

    def digest(name: str) -> str:
        out = tmp_path / "dist" / str(len(list(tmp_path.glob("dist/*"))))
        return hashlib.md5(build_functions.build(name, out, tree).read_bytes()).hexdigest()

    before = {name: digest(name) for name in ("partition", "predict")}
    assert digest("partition") == before["partition"]  # the same sources give the same bytes
    synth = tree.package / "tools" / "synth.py"
    synth.write_text(synth.read_text() + "\n# an edit to the synthetic-data generator\n")
    predict_step = tree.package / "steps" / "predict.py"
    predict_step.write_text(predict_step.read_text() + "\n# an edit to predict only\n")
    assert digest("partition") == before["partition"]
    assert digest("predict") != before["predict"]
    validation = tree.package / "data" / "validation" / "upload.py"
    validation.write_text(validation.read_text() + "\n# partition imports this\n")
    assert digest("partition") != before["partition"]


def test_an_import_no_installed_distribution_provides_stops_the_build(tmp_path: Path) -> None:
    """Its pin cannot be chosen: an archive without it would fail on first import in the cloud."""
    tree = _tree_copy(tmp_path / "tree")
    errors = tree.package / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport surely_not_installed_anywhere  # noqa\n")
    with pytest.raises(
        SystemExit, match="partition: no installed distribution provides surely_not_installed"
    ):
        build_functions.build("partition", tmp_path / "dist", tree)


@pytest.mark.integration  # an outside tool in its own venv (.venv-checkov), a minute or more
def test_checkov_passes_with_justified_skips() -> None:
    if not CHECKOV.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"checkov is missing at {CHECKOV}: `make test` creates .venv-checkov")
        pytest.skip("checkov not installed (make test creates .venv-checkov)")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    result = subprocess.run(
        [str(CHECKOV), "-d", str(TERRAFORM), "--framework", "terraform", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and summary["parsing_errors"] == 0, failed
    assert summary["passed"] > 30
    for check in report["results"]["skipped_checks"]:
        reason = check["check_result"].get("suppress_comment") or ""
        assert len(reason) > 20, f"{check['check_id']} on {check['resource']} is skipped without a reason"


def test_cloud_run_image_is_built_from_the_api_dockerfile(tf: dict) -> None:
    dockerfile = (ROOT / "api" / "Dockerfile").read_text()
    assert "batchcast_api.app:app" in dockerfile or "batchcast serve" in dockerfile
    # The image installs the deploy lock with its hashes, and the package without re-resolving.
    assert "--require-hashes -r requirements/deploy.txt" in dockerfile
    assert "--no-deps" in dockerfile
    workflow = (ROOT / ".github" / "workflows" / "deliver.yml").read_text()
    assert "-f api/Dockerfile" in workflow


def test_training_job_runs_the_lean_job_module(tf: dict) -> None:
    from batchcast.entrypoints import job

    [task] = tf["resource"]["google_cloud_run_v2_job"]["train"]["template"][0]["template"]
    [container] = task["containers"]
    assert container["command"] == ["python", "-m", job.__name__]
    with pytest.raises(SystemExit) as exited:  # argparse exits 2 on a command it does not know
        job.main([*container["args"], "--help"])
    assert exited.value.code == 0


def test_every_reference_resolves(tf_text: str) -> None:
    """What `terraform validate` would catch first: references to undeclared resources, data
    sources, locals and variables (typos, renamed resources)."""
    code = re.sub(r"#.*", "", tf_text)
    resources = set(re.findall(r'^resource "([a-z0-9_]+)" "([a-z0-9_]+)"', code, re.M))
    data = set(re.findall(r'^data "([a-z0-9_]+)" "([a-z0-9_]+)"', code, re.M))
    variables = set(re.findall(r'^variable "([a-z0-9_]+)"', code, re.M))
    local_blocks = re.findall(r"^locals \{\n(.*?)^\}", code, re.M | re.S)
    local_names = {name for block in local_blocks for name in re.findall(r"^  ([a-z0-9_]+)\s*=", block, re.M)}
    code = re.sub(r"^moved \{.*?^\}", "", code, flags=re.M | re.S)  # names resources that no longer exist
    body = re.sub(r'^(resource|data|variable) "[^"]+"( "[^"]+")? \{', "", code, flags=re.M)
    for kind, name in set(re.findall(r"(?<!data\.)\b(google_[a-z0-9_]+)\.([a-z0-9_]+)", body)):
        assert (kind, name) in resources, f"{kind}.{name} is not declared"
    for kind, name in set(re.findall(r"\bdata\.(google_[a-z0-9_]+)\.([a-z0-9_]+)", body)):
        assert (kind, name) in data, f"data.{kind}.{name} is not declared"
    assert set(re.findall(r"\bvar\.([a-z0-9_]+)", body)) <= variables
    assert set(re.findall(r"\blocal\.([a-z0-9_]+)", body)) <= local_names
    assert len(resources) > 30 and {"project", "region"} <= variables


def test_no_resource_depends_on_itself_through_locals(tf_text: str) -> None:
    """Terraform refuses a plan with a cycle (a service whose env names its own URL), and only a
    plan would show it: walk the references between resources and top-level locals here."""
    code = re.sub(r"#.*", "", tf_text)
    code = re.sub(r"^moved \{.*?^\}", "", code, flags=re.M | re.S)
    nodes: dict[str, str] = {}
    for kind, name, body in re.findall(
        r'^resource "([a-z0-9_]+)" "([a-z0-9_]+)" \{\n(.*?)^\}', code, re.M | re.S
    ):
        nodes[f"{kind}.{name}"] = body
    for block in re.findall(r"^locals \{\n(.*?)^\}", code, re.M | re.S):
        for name, body in re.findall(r"^  ([a-z0-9_]+)\s*=(.*?)(?=^  [a-z0-9_]+\s*=|\Z)", block, re.M | re.S):
            nodes[f"local.{name}"] = body
    edges = {
        node: {
            f"{k}.{n}" for k, n in re.findall(r"(?<!data\.)\b(google_[a-z0-9_]+|local)\.([a-z0-9_]+)", body)
        }
        & nodes.keys()
        for node, body in nodes.items()
    }

    def reaches(start: str) -> set[str]:
        seen, todo = set(), list(edges[start])
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(edges[node])
        return seen

    assert "google_cloud_run_v2_service.app" in nodes and "local.extra_env" in nodes
    assert [node for node in nodes if node in reaches(node)] == []


def test_bucket_grants_cover_what_each_process_really_touches(tf: dict, small_retail, tmp_path) -> None:
    """Run the pipeline (every function, and the training job's step) on a recording bucket and
    check each object it read, created or updated lies under a prefix Terraform grants it."""
    from batchcast.core.messages import ScheduleTick, TrainRequest
    from batchcast.data import catalog, dataset, uploads
    from batchcast.ports import FixedClock
    from batchcast.tools import synth
    from batchcast.tools.counting import OUTSIDE, CountingBlobStore
    from batchcast.tools.demo import demo_clock

    profile = small_retail("grants")
    at = demo_clock(profile, date(2026, 3, 1))
    deployment = runtime.embedded(tmp_path, clock=FixedClock(at), backoff_seconds=0.001)
    blobs = CountingBlobStore(deployment.ports.blobs, names=True)
    deployment.ports.blobs = blobs
    handle = deployment.handle

    def recorded(function: str, message: Any, **options: Any) -> Any:
        with blobs.attributed("train_job" if function == "train" else function):
            return handle(function, message, **options)

    deployment.handle = recorded  # type: ignore[method-assign]
    frame = synth.generate(profile, 4, 90, seed=6, end=date(2026, 3, 1))
    # One bad row (the rejected rows are streamed to rejected/) and a file rejected whole (copied there).
    data = frame.to_csv(index=False).encode() + b"oops\n"
    uploads.store_upload(blobs.inner, data, ext="csv", now=at, dataset="grants")
    uploads.store_upload(blobs.inner, b"Store,Day\n1,2\n", ext="csv", now=at, dataset="grants")
    deployment.bus.drain()
    plans = b"store_id,city,date,open,promo\n,berlin,2026-03-03,1,1\n"  # future values, read by predict
    uploads.store_upload(blobs.inner, plans, ext="csv", now=at, dataset="grants")
    deployment.bus.drain()
    later = at + timedelta(days=1)
    deployment.ports.clock = FixedClock(later)
    deployment.ports.bus.publish(
        Topic.SCHEDULE, ScheduleTick(dataset="grants", actions=["notify"], logical_time=later)
    )
    data = catalog.read(blobs.inner, profile, "berlin")
    job = TrainRequest(
        dataset="grants",
        city="berlin",
        actions=["train", "predict"],
        fingerprint=dataset.fingerprint(data, profile),
        logical_time=later,
    )
    deployment.handle("train", job)
    deployment.bus.drain()

    access = tf["locals"]["bucket_access"]
    may = {"read": ("read", "create", "update"), "create": ("create", "update"), "update": ("update",)}
    processes = {process for process, _, _ in blobs.touched} - {OUTSIDE}
    assert processes == {"partition", "train_trigger", "predict", "notify", "train_job"}
    rejected = sorted(n for _, level, n in blobs.touched if level == "create" and n.startswith("rejected/"))
    assert [n.rsplit(".", 1)[-1] for n in rejected] == ["csv", "json", "csv", "json"]  # 2 uploads, 2 ways
    denied = sorted(
        (process, level, name)
        for process, level, name in blobs.touched
        if process != OUTSIDE
        and not any(name.startswith(p) for lvl in may[level] for p in access[process][lvl])
    )
    assert denied == [], "Terraform would deny these:\n" + "\n".join(map(str, denied))
