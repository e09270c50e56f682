"""keycycle plugin for the demo token service, in Python: the same
operations as the Rust `plugins/example`, for the same runbooks.

The service speaks JSON with `Authorization: Bearer <token>`; errors are
`{"message": "..."}` and 429 answers carry `Retry-After` in seconds.

Build (from the repository root, componentize-py from PyPI):

    componentize-py -d wit/plugin.wit -w plugin componentize \\
        -p plugins/example-py app -o example_py.wasm
"""

from typing import Any, Dict
from urllib.parse import quote

import wit_world
from wit_world.imports import types

import keycycle_plugin as kc

# How long to wait on a 429 that does not say, as the Rust example.
DEFAULT_RETRY_MS = 1_000

DESCRIPTION = kc.description(
    "example",
    "0.1.0",
    hosts=("{config.base_url}",),
    secrets=("token",),
    config=("base_url",),
    operations=[
        kc.operation("ping", "Answer without touching the network (for health checks and benchmarks)"),
        kc.operation("whoami", "Who the admin token belongs to"),
        kc.operation("list_tokens", "List all tokens (names and ids, never values)"),
        kc.operation(
            "create_token",
            "Create a token and return its value",
            inputs=(("name", "name of the new token", True),),
            secret_outputs=("token",),
            mutates=True,
            recover_with="find_token",
        ),
        kc.operation(
            "find_token",
            "Find the token create_token made with this name in this step",
            inputs=(("name", "name given to create_token", True),),
        ),
        kc.operation(
            "check_token",
            "Check whether a token is accepted",
            inputs=(("token", "the token to check", True),),
        ),
        kc.operation(
            "revoke_token",
            "Revoke a token by id",
            inputs=(("id", "id of the token to revoke", True),),
            mutates=True,
            if_interrupted=(
                "the token may or may not be revoked; check with list_tokens and "
                "revoke it again if it is still active"
            ),
        ),
    ],
)


def base(ctx: kc.Context) -> str:
    return ctx.setting("base_url").rstrip("/")


def admin(method: str, ctx: kc.Context, path: str, json_body: Any = None) -> kc.Response:
    """Sends with the admin token; an answer that is not 2xx is an error."""
    response = kc.send(method, base(ctx) + path, bearer=kc.secret("token"), json_body=json_body)
    return response.error_for_status(DEFAULT_RETRY_MS)


def labelled(ctx: kc.Context, name: str) -> str:
    """The name create_token gives a token, labelled with the step's
    idempotency key so that find_token can find it after an interruption."""
    return f"{name} [{ctx.idempotency_key}]" if ctx.idempotency_key else name


def text_field(data: Dict[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise kc.invalid_input(f"input `{name}` must be a string")
    return value


def ping(ctx: kc.Context, data: Dict[str, Any]) -> Dict[str, Any]:
    return {"pong": True}


def whoami(ctx: kc.Context, data: Dict[str, Any]) -> Dict[str, Any]:
    me = admin("GET", ctx, "/api/whoami").json()
    return {"user": me["user"], "token_id": me["token_id"], "token_name": me["token_name"]}


def list_tokens(ctx: kc.Context, data: Dict[str, Any]) -> Dict[str, Any]:
    return {"tokens": admin("GET", ctx, "/api/tokens").json()}


def create_token(ctx: kc.Context, data: Dict[str, Any]) -> Dict[str, Any]:
    name = labelled(ctx, text_field(data, "name"))
    created = admin("POST", ctx, "/api/tokens", {"name": name}).json()
    kc.log("info", f"created token {created['id']} ({created['name']})")
    return {"id": created["id"], "name": created["name"], "token": created["token"]}


def find_token(ctx: kc.Context, data: Dict[str, Any]) -> Dict[str, Any]:
    name = labelled(ctx, text_field(data, "name"))
    listed = admin("GET", ctx, "/api/tokens?name=" + quote(name, safe="")).json()
    # The filter is exact, but a service that ignores it must not make us
    # adopt someone else's token; prefer an active one, then the newest.
    mine = [t for t in listed if t["name"] == name]
    if not mine:
        raise kc.provider(404, f"no token named `{name}`")
    best = max(mine, key=lambda t: (t["active"], t["id"]))
    return {"id": best["id"], "name": best["name"]}


def check_token(ctx: kc.Context, data: Dict[str, Any]) -> Dict[str, Any]:
    # This call authenticates with the token under test, not the admin one.
    response = kc.send("GET", base(ctx) + "/api/whoami", bearer=text_field(data, "token"))
    if response.status == 401:
        return {"valid": False, "token_id": None}
    me = response.error_for_status(DEFAULT_RETRY_MS).json()
    return {"valid": True, "token_id": me["token_id"]}


def revoke_token(ctx: kc.Context, data: Dict[str, Any]) -> Dict[str, Any]:
    token_id = data["id"]
    if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
        raise kc.invalid_input("input `id` must be a whole number")
    admin("DELETE", ctx, f"/api/tokens/{token_id}")
    kc.log("info", f"revoked token {token_id}")
    return {"id": token_id, "revoked": True}


HANDLERS = {
    "ping": ping,
    "whoami": whoami,
    "list_tokens": list_tokens,
    "create_token": create_token,
    "find_token": find_token,
    "check_token": check_token,
    "revoke_token": revoke_token,
}


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.Description:
        return DESCRIPTION

    def invoke(self, context: types.CallContext, operation: str, input: str) -> str:
        return kc.dispatch(DESCRIPTION, HANDLERS, context, operation, input)
