"""{{name}}: a keycycle plugin in Python. `DESCRIPTION` says what it does
and needs; each handler runs one operation against the provider at
`base_url`. `keycycle_plugin.py` checks calls and maps errors for you."""

from typing import Any, Dict
from urllib.parse import quote

import wit_world
from wit_world.imports import types

import keycycle_plugin as kc

DESCRIPTION = kc.description(
    "{{name}}",
    "0.1.0",
    hosts=("{config.base_url}",),
    secrets=("token",),
    config=("base_url",),
    operations=[
        kc.operation("whoami", "Who the granted token belongs to"),
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
            "Find the token create_token made in this step",
            inputs=(("name", "name given to create_token", True),),
        ),
    ],
)


def call(method: str, ctx: kc.Context, path: str, json_body: Any = None) -> Any:
    base = ctx.setting("base_url").rstrip("/")
    response = kc.send(method, base + path, bearer=kc.secret("token"), json_body=json_body)
    return response.error_for_status().json()


def labelled(ctx: kc.Context, name: str) -> str:
    """Labelled with the call's idempotency key, so that find_token finds
    what an interrupted create_token made."""
    return f"{name} [{ctx.idempotency_key}]" if ctx.idempotency_key else name


def whoami(ctx: kc.Context, data: Dict[str, Any]) -> Dict[str, Any]:
    return {"user": call("GET", ctx, "/api/whoami")["user"]}


def create_token(ctx: kc.Context, data: Dict[str, Any]) -> Dict[str, Any]:
    made = call("POST", ctx, "/api/tokens", {"name": labelled(ctx, str(data["name"]))})
    return {"id": made["id"], "name": made["name"], "token": made["token"]}


def find_token(ctx: kc.Context, data: Dict[str, Any]) -> Dict[str, Any]:
    name = labelled(ctx, str(data["name"]))
    mine = [t for t in call("GET", ctx, "/api/tokens?name=" + quote(name, safe="")) if t["name"] == name]
    if not mine:
        raise kc.provider(404, f"no token named `{name}`")
    # The value was shown only in the lost answer: without it, keycycle
    # stops for an operator instead of minting a second token.
    best = max(mine, key=lambda t: t["id"])
    return {"id": best["id"], "name": best["name"]}


HANDLERS = {"whoami": whoami, "create_token": create_token, "find_token": find_token}


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.Description:
        return DESCRIPTION

    def invoke(self, context: types.CallContext, operation: str, input: str) -> str:
        return kc.dispatch(DESCRIPTION, HANDLERS, context, operation, input)
