"""Helpers for keycycle plugins written in Python and built with
componentize-py against keycycle's `wit/plugin.wit` (world `plugin`).

A plugin module defines `DESCRIPTION` (built with `description` and
`operation`) and a class `WitWorld` whose `describe` and `invoke` call
`describe` and `dispatch` here. These helpers do what the Rust SDK does:
check each call's operation and input against the description, turn
errors into the contract's `plugin-error`, send HTTP through the host, and
map an answer that is not 2xx (429 retryable after `Retry-After`, anything
else the provider's status and own message).
"""

import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from componentize_py_types import Err
from wit_world.imports import host, types

# How long a 429 without a usable Retry-After asks the host to wait.
DEFAULT_RETRY_MS = 5_000
# How much of a text error body (a proxy's page) a message keeps.
MAX_TEXT_MESSAGE = 300


class PluginError(Exception):
    """An operation's failure, one kind per case of the WIT `plugin-error`."""

    def __init__(self, error: types.PluginError):
        super().__init__(repr(error))
        self.error = error


def provider(status: int, message: str) -> PluginError:
    """The provider answered `status` with `message` (0: no answer came)."""
    return PluginError(types.PluginError_Provider(types.ProviderError(status, message)))


def denied(message: str) -> PluginError:
    return PluginError(types.PluginError_Denied(message))


def invalid_input(message: str) -> PluginError:
    return PluginError(types.PluginError_InvalidInput(message))


def retryable(delay_ms: int, message: str) -> PluginError:
    return PluginError(types.PluginError_Retryable(types.RetryLater(delay_ms, message)))


def operation(
    name: str,
    doc: str,
    inputs: Tuple[Tuple[str, str, bool], ...] = (),
    secret_outputs: Tuple[str, ...] = (),
    mutates: bool = False,
    recover_with: Optional[str] = None,
    idempotent: bool = False,
    if_interrupted: Optional[str] = None,
) -> types.Operation:
    """One operation; `inputs` are (name, doc, required)."""
    return types.Operation(
        name=name,
        doc=doc,
        inputs=[types.Field(n, d, r) for (n, d, r) in inputs],
        secret_outputs=list(secret_outputs),
        mutates=mutates,
        recover_with=recover_with,
        idempotent=idempotent,
        if_interrupted=if_interrupted,
    )


def description(
    name: str,
    version: str,
    operations: List[types.Operation],
    hosts: Tuple[str, ...] = (),
    secrets: Tuple[str, ...] = (),
    config: Tuple[str, ...] = (),
) -> types.Description:
    return types.Description(
        name=name,
        version=version,
        operations=operations,
        hosts=list(hosts),
        secrets=list(secrets),
        config=list(config),
    )


@dataclass
class Context:
    """Facts about one call: its run, its idempotency key, its config."""

    run_id: str
    idempotency_key: str
    config: Dict[str, str]

    def setting(self, key: str) -> str:
        value = self.config.get(key)
        if value is None:
            raise denied(f"config `{key}` is not granted to this plugin")
        return value


def secret(name: str) -> str:
    """A declared, granted secret."""
    try:
        return host.secret(name)
    except Err as e:
        raise denied(str(e.value))


def log(level: str, message: str) -> None:
    """A log line (`trace`, `debug`, `info`, `warn`, `error`); the host masks secrets in it."""
    levels = {
        "trace": host.Level.TRACE,
        "debug": host.Level.DEBUG,
        "info": host.Level.INFO,
        "warn": host.Level.WARN,
        "error": host.Level.ERROR,
    }
    host.log(levels[level], message)


@dataclass
class Response:
    status: int
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise provider(self.status, f"the response body is not the JSON expected ({e.msg})")

    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def to_error(self, default_retry_ms: int = DEFAULT_RETRY_MS) -> PluginError:
        """The error a runbook should see for this answer (see the Rust SDK's `to_error`)."""
        message = self._message()
        retry_after = self.header("Retry-After")
        if self.status == 429 or (self.status == 503 and retry_after is not None):
            try:
                delay_ms = max(int(retry_after.strip()), 1) * 1000
            except (AttributeError, ValueError):
                delay_ms = default_retry_ms
            return retryable(delay_ms, message)
        return provider(self.status, message)

    def error_for_status(self, default_retry_ms: int = DEFAULT_RETRY_MS) -> "Response":
        if self.is_success():
            return self
        raise self.to_error(default_retry_ms)

    def _message(self) -> str:
        try:
            body = json.loads(self.body)
        except ValueError:
            body = None
        if isinstance(body, dict):
            for key in ("message", "error_description", "error"):
                if isinstance(body.get(key), str) and body[key].strip():
                    return body[key]
            errors = body.get("errors")
            if isinstance(errors, list) and all(isinstance(e, str) for e in errors) and errors:
                return "; ".join(errors)
        text = self.body.decode("utf-8", "replace").strip()
        return text[:MAX_TEXT_MESSAGE] if text else f"HTTP {self.status}"


def send(
    method: str,
    url: str,
    bearer: Optional[str] = None,
    json_body: Any = None,
    headers: Tuple[Tuple[str, str], ...] = (),
) -> Response:
    """Sends one request through the host, which allows only granted origins."""
    all_headers = list(headers)
    body = b""
    if bearer is not None:
        all_headers.append(("Authorization", f"Bearer {bearer}"))
    if json_body is not None:
        all_headers.append(("Content-Type", "application/json"))
        body = json.dumps(json_body).encode()
    request = host.HttpRequest(method=method, url=url, headers=all_headers, body=body)
    try:
        answer = host.http_send(request)
    except Err as e:
        error = e.value
        if isinstance(error, host.HttpError_Denied):
            raise denied(error.value)
        if isinstance(error, host.HttpError_Timeout):
            raise provider(0, f"request timed out: {error.value}")
        if isinstance(error, host.HttpError_TooLarge):
            raise provider(0, f"response is too large: {error.value}")
        raise provider(0, f"request failed: {error.value}")
    return Response(answer.status, list(answer.headers), bytes(answer.body))


def dispatch(
    desc: types.Description,
    handlers: Dict[str, Callable[[Context, Dict[str, Any]], Any]],
    context: types.CallContext,
    operation_name: str,
    input_text: str,
) -> str:
    """Runs one call: checks the operation and its input against `desc`,
    calls its handler, and returns the JSON text of its output, or raises
    the contract's error."""
    try:
        spec = next((op for op in desc.operations if op.name == operation_name), None)
        if spec is None:
            names = ", ".join(op.name for op in desc.operations)
            raise invalid_input(
                f"plugin `{desc.name}` has no operation `{operation_name}`; it has: {names}"
            )
        try:
            data = json.loads(input_text)
        except ValueError as e:
            raise invalid_input(f"the input of `{operation_name}` is not JSON ({e.msg})")
        if not isinstance(data, dict):
            raise invalid_input(f"the input of `{operation_name}` must be a JSON object")
        known = {f.name for f in spec.inputs}
        for f in spec.inputs:
            if f.required and data.get(f.name) is None:
                raise invalid_input(f"`{operation_name}` needs input `{f.name}` ({f.doc})")
        for key in data:
            if key not in known:
                raise invalid_input(f"`{operation_name}` takes no input `{key}`")
        handler = handlers.get(operation_name)
        if handler is None:
            raise invalid_input(
                f"operation `{operation_name}` is declared but this plugin does not implement it"
            )
        ctx = Context(context.run_id, context.idempotency_key, dict(context.config))
        output = handler(ctx, data)
        if not isinstance(output, dict):
            raise invalid_input(f"`{operation_name}` returned something other than an object")
        return json.dumps(output)
    except PluginError as e:
        raise Err(e.error)
