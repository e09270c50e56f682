"""Drives the Kubernetes simulator with the official Python client's calls.

Run by tests/it/python_kubernetes.rs, which seeds the simulator and checks
its true state afterwards. Any answer the client does not accept (a status,
a body its models cannot read) raises, and the script exits non-zero; each
error the API server is documented to give is checked for its status and
reason.

Input, all from the environment:
  K8S_URL      the simulator's origin, e.g. http://127.0.0.1:PORT
  K8S_TOKEN    a service-account token allowed in NAMESPACE
  NAMESPACE    where the objects below live
  SECRET       a Secret with the key bearer_token
  NEW_VALUE    the value to rotate bearer_token to
  CRONJOB      a CronJob to create a Job from
  DEPLOYMENT   a Deployment to restart

Output: one JSON object on stdout with names, versions and statuses only,
never a Secret value.
"""

import base64
import datetime
import json
import os
import sys

from kubernetes import client
from kubernetes.client.rest import ApiException

env = os.environ
ns = env["NAMESPACE"]
report = {}


def step(name):
    print(f"kubernetes client: {name}", file=sys.stderr)


def api_client(token):
    config = client.Configuration(host=env["K8S_URL"])
    config.api_key = {"authorization": token}
    config.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(config)


def refused(call, status, reason):
    """Runs call, which must fail with status and a Status of reason."""
    try:
        call()
    except ApiException as e:
        body = json.loads(e.body)
        assert e.status == status, (e.status, body.get("message"))
        assert body["kind"] == "Status", body
        assert body["reason"] == reason, body
        return body["message"]
    raise AssertionError(f"expected {status} {reason}, the call succeeded")


api = api_client(env["K8S_TOKEN"])
core = client.CoreV1Api(api)
batch = client.BatchV1Api(api)
apps = client.AppsV1Api(api)
b64 = lambda text: base64.b64encode(text.encode()).decode()

step("an unknown token")
report["unauthorized"] = refused(
    lambda: client.CoreV1Api(api_client("not-a-token")).read_namespaced_secret(env["SECRET"], ns),
    401,
    "Unauthorized",
)

step("read the secret")
before = core.read_namespaced_secret(env["SECRET"], ns)
report["keys"] = sorted(before.data)
report["rv_before"] = before.metadata.resource_version

step("rotate through stringData with a merge patch")
patched = core.patch_namespaced_secret(
    env["SECRET"],
    ns,
    {"stringData": {"bearer_token": env["NEW_VALUE"]}},
    _content_type="application/merge-patch+json",
)
assert patched.string_data is None
assert patched.data["bearer_token"] == b64(env["NEW_VALUE"]), "data not merged"
report["rv_after_patch"] = patched.metadata.resource_version

step("a replace carrying the stale resourceVersion")
report["conflict"] = refused(
    lambda: core.replace_namespaced_secret(env["SECRET"], ns, before), 409, "Conflict"
)

step("default patch types: a list is a JSON patch, an object a strategic merge")
labelled = core.patch_namespaced_secret(
    env["SECRET"], ns, [{"op": "add", "path": "/metadata/labels", "value": {"rotated": "yes"}}]
)
assert labelled.metadata.labels == {"rotated": "yes"}
annotated = core.patch_namespaced_secret(
    env["SECRET"], ns, {"metadata": {"annotations": {"rotated-by": "python"}}}
)
assert annotated.metadata.labels == {"rotated": "yes"}, "labels lost in a merge"
assert annotated.metadata.annotations == {"rotated-by": "python"}

step("server-side apply, as Signon's sync does it")
applied = core.patch_namespaced_secret(
    env["SECRET"],
    ns,
    {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": env["SECRET"], "namespace": ns},
        "data": {"bearer_token": base64.encodebytes(env["NEW_VALUE"].encode()).decode()},
    },
    field_manager="signon",
    force=True,
    _content_type="application/apply-patch+yaml",
)
assert applied.data["bearer_token"] == b64(env["NEW_VALUE"]), "apply not canonical"
report["rv_after_apply"] = applied.metadata.resource_version

step("a job from the cronjob, twice")
cronjob = batch.read_namespaced_cron_job(env["CRONJOB"], ns)
template = cronjob.spec.job_template
job = client.V1Job(
    api_version="batch/v1",
    kind="Job",
    metadata=client.V1ObjectMeta(
        name="py-sync",
        annotations={"cronjob.kubernetes.io/instantiate": "manual"},
        labels=template.metadata.labels if template.metadata else None,
        owner_references=[
            client.V1OwnerReference(
                api_version="batch/v1",
                kind="CronJob",
                name=cronjob.metadata.name,
                uid=cronjob.metadata.uid,
                controller=True,
            )
        ],
    ),
    spec=template.spec,
)
created = batch.create_namespaced_job(ns, job)
report["job_active"] = created.status.active
report["job_exists"] = refused(lambda: batch.create_namespaced_job(ns, job), 409, "AlreadyExists")
report["jobs_listed"] = [j.metadata.name for j in batch.list_namespaced_job(ns).items]

step("restart the deployment")
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
restarted = apps.patch_namespaced_deployment(
    env["DEPLOYMENT"],
    ns,
    {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}},
    _content_type="application/strategic-merge-patch+json",
)
report["generation"] = restarted.metadata.generation
report["observed_generation"] = restarted.status.observed_generation

print(json.dumps(report))
