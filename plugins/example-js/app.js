// keycycle plugin for the demo token service, in JavaScript: the same
// operations as the Rust `plugins/example`, for the same runbooks.
//
// The service speaks JSON with `Authorization: Bearer <token>`; errors are
// `{"message": "..."}` and 429 answers carry `Retry-After` in seconds.
//
// Build (from the repository root; componentize-js from npm):
//
//     componentize-js plugins/example-js/app.js --wit wit/plugin.wit \
//         --world-name plugin --disable http fetch-event stdio -o example_js.wasm
//
// The first part of this file does what the Rust SDK does: it checks each
// call against the description, maps errors to the contract's
// `plugin-error`, and sends HTTP through the host. Copy it into a new
// plugin as it is; the second part is the plugin.

import { httpSend, log as hostLog, secret as hostSecret } from 'keycycle:plugin/host@0.1.0';

// ---- helpers ---------------------------------------------------------

/** How long a 429 without a usable Retry-After asks the host to wait. */
const DEFAULT_RETRY_MS = 5000;
/** How much of a text error body (a proxy's page) a message keeps. */
const MAX_TEXT_MESSAGE = 300;

/** An operation's failure, one kind per case of the WIT `plugin-error`. */
class PluginError extends Error {
  constructor(variant) {
    super(variant.tag);
    this.variant = variant;
  }
}

const provider = (status, message) =>
  new PluginError({ tag: 'provider', val: { status, message } });
const denied = (message) => new PluginError({ tag: 'denied', val: message });
const invalidInput = (message) => new PluginError({ tag: 'invalid-input', val: message });
// `delay-ms` is a u64: a BigInt.
const retryable = (delayMs, message) =>
  new PluginError({ tag: 'retryable', val: { delayMs: BigInt(delayMs), message } });

/** One operation; `inputs` are [name, doc, required]. */
function operation(name, doc, options = {}) {
  return {
    name,
    doc,
    inputs: (options.inputs ?? []).map(([n, d, r]) => ({ name: n, doc: d, required: r })),
    secretOutputs: options.secretOutputs ?? [],
    mutates: options.mutates ?? false,
    recoverWith: options.recoverWith,
    idempotent: options.idempotent ?? false,
    ifInterrupted: options.ifInterrupted,
  };
}

function secret(name) {
  try {
    return hostSecret(name);
  } catch (e) {
    throw denied(String(e.payload ?? e));
  }
}

function log(level, message) {
  hostLog(level, message);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

class Response {
  constructor(status, headers, body) {
    this.status = status;
    this.headers = headers;
    this.body = body;
  }

  header(name) {
    const found = this.headers.find(([k]) => k.toLowerCase() === name.toLowerCase());
    return found ? found[1] : undefined;
  }

  text() {
    return decoder.decode(this.body);
  }

  json() {
    try {
      return JSON.parse(this.text());
    } catch (e) {
      throw provider(this.status, `the response body is not the JSON expected (${e.message})`);
    }
  }

  isSuccess() {
    return this.status >= 200 && this.status < 300;
  }

  /** The error a runbook should see for this answer (as the Rust SDK's `to_error`). */
  toError(defaultRetryMs = DEFAULT_RETRY_MS) {
    const message = this.message();
    const retryAfter = this.header('Retry-After');
    if (this.status === 429 || (this.status === 503 && retryAfter !== undefined)) {
      const seconds = Number.parseInt(retryAfter ?? '', 10);
      const delay = Number.isNaN(seconds) ? defaultRetryMs : Math.max(seconds, 1) * 1000;
      return retryable(delay, message);
    }
    return provider(this.status, message);
  }

  errorForStatus(defaultRetryMs = DEFAULT_RETRY_MS) {
    if (this.isSuccess()) return this;
    throw this.toError(defaultRetryMs);
  }

  message() {
    let body;
    try {
      body = JSON.parse(this.text());
    } catch {
      body = undefined;
    }
    if (body && typeof body === 'object') {
      for (const key of ['message', 'error_description', 'error']) {
        if (typeof body[key] === 'string' && body[key].trim() !== '') return body[key];
      }
      if (Array.isArray(body.errors) && body.errors.length > 0 && body.errors.every((e) => typeof e === 'string')) {
        return body.errors.join('; ');
      }
    }
    const text = this.text().trim();
    return text === '' ? `HTTP ${this.status}` : text.slice(0, MAX_TEXT_MESSAGE);
  }
}

/** Sends one request through the host, which allows only granted origins. */
function send(method, url, { bearer, json, headers = [] } = {}) {
  const all = [...headers];
  let body = new Uint8Array(0);
  if (bearer !== undefined) all.push(['Authorization', `Bearer ${bearer}`]);
  if (json !== undefined) {
    all.push(['Content-Type', 'application/json']);
    body = encoder.encode(JSON.stringify(json));
  }
  let answer;
  try {
    answer = httpSend({ method, url, headers: all, body });
  } catch (e) {
    const error = e.payload ?? { tag: 'transport', val: String(e) };
    switch (error.tag) {
      case 'denied':
        throw denied(error.val);
      case 'timeout':
        throw provider(0, `request timed out: ${error.val}`);
      case 'too-large':
        throw provider(0, `response is too large: ${error.val}`);
      default:
        throw provider(0, `request failed: ${error.val}`);
    }
  }
  return new Response(answer.status, answer.headers, answer.body);
}

/** Runs one call against `description`, with `handlers[operation](ctx, input)`. */
function dispatch(description, handlers, context, operationName, inputText) {
  try {
    const spec = description.operations.find((op) => op.name === operationName);
    if (!spec) {
      const names = description.operations.map((op) => op.name).join(', ');
      throw invalidInput(`plugin \`${description.name}\` has no operation \`${operationName}\`; it has: ${names}`);
    }
    let input;
    try {
      input = JSON.parse(inputText);
    } catch (e) {
      throw invalidInput(`the input of \`${operationName}\` is not JSON (${e.message})`);
    }
    if (input === null || typeof input !== 'object' || Array.isArray(input)) {
      throw invalidInput(`the input of \`${operationName}\` must be a JSON object`);
    }
    for (const field of spec.inputs) {
      if (field.required && (input[field.name] === undefined || input[field.name] === null)) {
        throw invalidInput(`\`${operationName}\` needs input \`${field.name}\` (${field.doc})`);
      }
    }
    for (const key of Object.keys(input)) {
      if (!spec.inputs.some((f) => f.name === key)) {
        throw invalidInput(`\`${operationName}\` takes no input \`${key}\``);
      }
    }
    const handler = handlers[operationName];
    if (!handler) {
      throw invalidInput(`operation \`${operationName}\` is declared but this plugin does not implement it`);
    }
    const config = new Map(context.config);
    const ctx = {
      runId: context.runId,
      idempotencyKey: context.idempotencyKey,
      setting(key) {
        if (!config.has(key)) throw denied(`config \`${key}\` is not granted to this plugin`);
        return config.get(key);
      },
    };
    return JSON.stringify(handler(ctx, input));
  } catch (e) {
    if (e instanceof PluginError) throw e.variant;
    throw e;
  }
}

// ---- the plugin ------------------------------------------------------

// How long to wait on a 429 that does not say, as the Rust example.
const RETRY_MS = 1000;

const DESCRIPTION = {
  name: 'example',
  version: '0.1.0',
  hosts: ['{config.base_url}'],
  secrets: ['token'],
  config: ['base_url'],
  operations: [
    operation('ping', 'Answer without touching the network (for health checks and benchmarks)'),
    operation('whoami', 'Who the admin token belongs to'),
    operation('list_tokens', 'List all tokens (names and ids, never values)'),
    operation('create_token', 'Create a token and return its value', {
      inputs: [['name', 'name of the new token', true]],
      secretOutputs: ['token'],
      mutates: true,
      recoverWith: 'find_token',
    }),
    operation('find_token', 'Find the token create_token made with this name in this step', {
      inputs: [['name', 'name given to create_token', true]],
    }),
    operation('check_token', 'Check whether a token is accepted', {
      inputs: [['token', 'the token to check', true]],
    }),
    operation('revoke_token', 'Revoke a token by id', {
      inputs: [['id', 'id of the token to revoke', true]],
      mutates: true,
      ifInterrupted:
        'the token may or may not be revoked; check with list_tokens and revoke it again if it is still active',
    }),
  ],
};

const base = (ctx) => ctx.setting('base_url').replace(/\/+$/, '');

/** Sends with the admin token; an answer that is not 2xx is an error. */
const admin = (method, ctx, path, json) =>
  send(method, base(ctx) + path, { bearer: secret('token'), json }).errorForStatus(RETRY_MS);

/** The name create_token gives a token, labelled with the step's
 * idempotency key so that find_token can find it after an interruption. */
const labelled = (ctx, name) => (ctx.idempotencyKey ? `${name} [${ctx.idempotencyKey}]` : name);

function text(input, name) {
  if (typeof input[name] !== 'string') throw invalidInput(`input \`${name}\` must be a string`);
  return input[name];
}

const HANDLERS = {
  ping: () => ({ pong: true }),
  whoami(ctx) {
    const me = admin('GET', ctx, '/api/whoami').json();
    return { user: me.user, token_id: me.token_id, token_name: me.token_name };
  },
  list_tokens: (ctx) => ({ tokens: admin('GET', ctx, '/api/tokens').json() }),
  create_token(ctx, input) {
    const name = labelled(ctx, text(input, 'name'));
    const created = admin('POST', ctx, '/api/tokens', { name }).json();
    log('info', `created token ${created.id} (${created.name})`);
    return { id: created.id, name: created.name, token: created.token };
  },
  find_token(ctx, input) {
    const name = labelled(ctx, text(input, 'name'));
    const listed = admin('GET', ctx, `/api/tokens?name=${encodeURIComponent(name)}`).json();
    // The filter is exact, but a service that ignores it must not make us
    // adopt someone else's token; prefer an active one, then the newest.
    const mine = listed.filter((t) => t.name === name);
    if (mine.length === 0) throw provider(404, `no token named \`${name}\``);
    mine.sort((a, b) => Number(a.active) - Number(b.active) || a.id - b.id);
    const best = mine[mine.length - 1];
    return { id: best.id, name: best.name };
  },
  check_token(ctx, input) {
    // This call authenticates with the token under test, not the admin one.
    const response = send('GET', `${base(ctx)}/api/whoami`, { bearer: text(input, 'token') });
    if (response.status === 401) return { valid: false, token_id: null };
    const me = response.errorForStatus(RETRY_MS).json();
    return { valid: true, token_id: me.token_id };
  },
  revoke_token(ctx, input) {
    const id = input.id;
    if (!Number.isInteger(id) || id < 0) throw invalidInput('input `id` must be a whole number');
    admin('DELETE', ctx, `/api/tokens/${id}`);
    log('info', `revoked token ${id}`);
    return { id, revoked: true };
  },
};

export function describe() {
  return DESCRIPTION;
}

export function invoke(context, operationName, input) {
  return dispatch(DESCRIPTION, HANDLERS, context, operationName, input);
}
