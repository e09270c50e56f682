//! The functions a runbook can call, registered on the engine. Each one that
//! touches the world does so through [`Effects`]; failures become Rhai
//! runtime errors whose value is an object map a runbook can `catch`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use keycycle_contract::{PluginDescription, PluginError, Value};
use keycycle_secret::{MASK, SecretValue, redact};
use rhai::{Array, Dynamic, Engine, EvalAltResult, INT, ImmutableString, Map, NativeCallContext};

use crate::effects::{Answer, ApprovalRequest, EffectError, Effects, LogLevel, Prompt, PromptKind};
use crate::value::{
    PluginHandle, SecretHandle, Terminate, from_value, plugin_text, render, to_value,
};

type Rr<T> = Result<T, Box<EvalAltResult>>;

/// The longest input name [`input_name`] derives from a prompt's text.
pub const MAX_INPUT_NAME_LEN: usize = 40;

/// The most random bytes `random_secret` hands out at once.
pub const MAX_RANDOM_BYTES: INT = 1024;

/// The message for any attempt to turn a secret into text.
pub(crate) const SECRET_AS_TEXT: &str =
    "secret values cannot be turned into text; pass the handle to a plugin instead";

/// Method names a plugin operation cannot take, because the engine gives
/// them a meaning on every plugin handle. Such operations are still
/// reachable with `invoke(p, "name", #{..})`.
pub(crate) const RESERVED_METHODS: &[&str] = &[
    "to_string",
    "to_debug",
    "invoke",
    "defer",
    "type_of",
    "is_shared",
];

/// What the registered functions share.
pub(crate) struct Host {
    pub effects: Arc<dyn Effects>,
    pub params: BTreeMap<String, String>,
    /// Every configured plugin, described before the runbook compiled, or
    /// the error that loading it ended with (or that it was not loaded,
    /// for one the runbook does not name).
    pub plugins: BTreeMap<String, Result<Arc<PluginDescription>, EffectError>>,
    /// The method names the runbook's files call. Each may be an
    /// operation of a plugin that is not described (a handle passed to a
    /// function), so each gets a method on a plugin handle; the call
    /// checks that the handle's plugin has it.
    pub methods: BTreeSet<String>,
}

/// The input name a prompt's text stands for, when the runbook gives none:
/// lowercase ASCII letters and digits, every other run of characters
/// turned into one `_`, no `_` at either end, at most
/// [`MAX_INPUT_NAME_LEN`] characters; `input` when nothing is left.
///
/// `prompt("New GitLab token?")` is answered with `--input new_gitlab_token=…`.
pub fn input_name(text: &str) -> String {
    let mut name = String::with_capacity(text.len().min(MAX_INPUT_NAME_LEN));
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.is_empty() && !name.ends_with('_') {
            name.push('_');
        }
    }
    name.truncate(MAX_INPUT_NAME_LEN);
    let name = name.trim_matches('_');
    if name.is_empty() {
        "input".to_owned()
    } else {
        name.to_owned()
    }
}

/// An error map with the fields every runbook-visible error has.
pub(crate) fn error_map(kind: &str, message: &str) -> Dynamic {
    error_fields(kind, message).into()
}

fn error_fields(kind: &str, message: &str) -> Map {
    let mut map = Map::new();
    map.insert("kind".into(), kind.into());
    map.insert("message".into(), redact(message).into_owned().into());
    map.insert("plugin".into(), Dynamic::UNIT);
    map.insert("operation".into(), Dynamic::UNIT);
    map.insert("status".into(), Dynamic::UNIT);
    map.insert("delay_ms".into(), Dynamic::UNIT);
    map
}

/// The map for an effect's error. `call` names the plugin operation the
/// error came from, when it came from one.
fn effect_error_map(err: &EffectError, call: Option<(&str, &str)>) -> Dynamic {
    let message = match (err, call) {
        (EffectError::Plugin { .. }, _) | (_, None) => err.to_string(),
        (_, Some((plugin, operation))) => format!("{plugin}.{operation}: {err}"),
    };
    let mut map = error_fields(err.kind(), &message);
    if let Some((plugin, operation)) = call {
        map.insert("plugin".into(), plugin.into());
        map.insert("operation".into(), operation.into());
    }
    if let EffectError::Plugin {
        plugin,
        operation,
        error,
    } = err
    {
        map.insert("plugin".into(), plugin.as_str().into());
        map.insert("operation".into(), operation.as_str().into());
        match error {
            PluginError::Provider { status, .. } => {
                map.insert("status".into(), INT::from(*status).into());
            }
            PluginError::Retryable { delay_ms, .. } => {
                let delay = INT::try_from(*delay_ms).unwrap_or(INT::MAX);
                map.insert("delay_ms".into(), delay.into());
            }
            PluginError::Denied(_) | PluginError::InvalidInput(_) => {}
        }
    }
    map.into()
}

fn raise(ctx: &NativeCallContext, value: Dynamic) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(value, ctx.call_position()).into()
}

/// A mistake in how the runbook calls a function (not an effect failing).
fn misuse(ctx: &NativeCallContext, message: &str) -> Box<EvalAltResult> {
    raise(ctx, error_map("runtime", message))
}

fn effect_failed(ctx: &NativeCallContext, err: &EffectError) -> Box<EvalAltResult> {
    raise(ctx, effect_error_map(err, None))
}

impl Host {
    fn prompt(
        &self,
        ctx: &NativeCallContext,
        name: &str,
        text: &str,
        kind: PromptKind,
    ) -> Rr<Answer> {
        let prompt = Prompt {
            name: name.to_owned(),
            text: text.to_owned(),
            kind,
        };
        self.effects
            .prompt(&prompt)
            .map_err(|err| effect_failed(ctx, &err))
    }

    fn prompt_text(&self, ctx: &NativeCallContext, name: &str, text: &str) -> Rr<Dynamic> {
        match self.prompt(ctx, name, text, PromptKind::Text)? {
            Answer::Text(s) => Ok(s.into()),
            Answer::Secret(s) => Ok(Dynamic::from(SecretHandle(s))),
            Answer::Confirm(_) => Err(self.wrong_answer(ctx, name, "yes/no", "text")),
        }
    }

    fn prompt_secret(&self, ctx: &NativeCallContext, name: &str, text: &str) -> Rr<SecretHandle> {
        match self.prompt(ctx, name, text, PromptKind::Secret)? {
            Answer::Secret(s) => Ok(SecretHandle(s)),
            // An answer given as text is still a secret from here on.
            Answer::Text(s) => Ok(SecretHandle(SecretValue::new(s))),
            Answer::Confirm(_) => Err(self.wrong_answer(ctx, name, "yes/no", "secret")),
        }
    }

    fn confirm(&self, ctx: &NativeCallContext, name: &str, text: &str) -> Rr<bool> {
        match self.prompt(ctx, name, text, PromptKind::Confirm)? {
            Answer::Confirm(b) => Ok(b),
            Answer::Text(s) => match PromptKind::Confirm.parse_answer(&s) {
                Ok(Answer::Confirm(b)) => Ok(b),
                _ => Err(self.wrong_answer(ctx, name, "text", "yes/no")),
            },
            Answer::Secret(_) => Err(self.wrong_answer(ctx, name, "secret", "yes/no")),
        }
    }

    fn wrong_answer(
        &self,
        ctx: &NativeCallContext,
        name: &str,
        got: &str,
        want: &str,
    ) -> Box<EvalAltResult> {
        let err = EffectError::Failed(format!(
            "the answer to `{name}` is a {got} answer, but the runbook asks for a {want} answer"
        ));
        effect_failed(ctx, &err)
    }

    fn plugin(&self, ctx: &NativeCallContext, name: &str) -> Rr<PluginHandle> {
        match self.plugins.get(name) {
            Some(Ok(_)) => Ok(PluginHandle { name: name.into() }),
            Some(Err(err)) => {
                let message = format!("plugin `{name}` could not be loaded: {err}");
                let mut map = error_fields(err.kind(), &message);
                map.insert("plugin".into(), name.into());
                Err(raise(ctx, map.into()))
            }
            None => {
                let known: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
                let message = if known.is_empty() {
                    format!("unknown plugin `{name}`: no plugins are configured")
                } else {
                    format!(
                        "unknown plugin `{name}`; configured plugins: {}",
                        known.join(", ")
                    )
                };
                Err(misuse(ctx, &message))
            }
        }
    }

    fn invoke(
        &self,
        ctx: &NativeCallContext,
        plugin: &PluginHandle,
        operation: &str,
        input: Dynamic,
    ) -> Rr<Dynamic> {
        let Some(Ok(description)) = self.plugins.get(plugin.name.as_str()) else {
            return Err(misuse(ctx, &format!("unknown plugin `{}`", plugin.name)));
        };
        if description.operation(operation).is_none() {
            let ops: Vec<&str> = description
                .operations
                .iter()
                .map(|o| o.name.as_str())
                .collect();
            return Err(misuse(
                ctx,
                &format!(
                    "plugin `{}` has no operation `{operation}`; it has: {}",
                    plugin.name,
                    ops.join(", ")
                ),
            ));
        }
        let input = if input.is_unit() {
            Value::map()
        } else {
            match to_value(&input) {
                Ok(v @ Value::Map(_)) => v,
                Ok(_) => {
                    return Err(misuse(
                        ctx,
                        &format!(
                            "`{}.{operation}` takes an object map, like #{{ id: 7 }}; got {}",
                            plugin.name,
                            input.type_name()
                        ),
                    ));
                }
                Err(why) => {
                    return Err(misuse(
                        ctx,
                        &format!("`{}.{operation}` input: {why}", plugin.name),
                    ));
                }
            }
        };
        match self.effects.invoke(&plugin.name, operation, input) {
            Ok(output) => Ok(from_value(output)),
            Err(err) => Err(raise(
                ctx,
                effect_error_map(&err, Some((plugin.name.as_str(), operation))),
            )),
        }
    }

    /// `approval(#{ id, title, summary, environments, approvers })`: the
    /// decision as a map once approved. Waiting and rejection stop the run
    /// in a way no `try` can catch.
    fn approval(&self, ctx: &NativeCallContext, request: &Map) -> Rr<Dynamic> {
        let request = approval_request(ctx, request)?;
        match self.effects.approval(&request) {
            Ok(decision) => Ok(from_value(decision)),
            Err(err @ (EffectError::AwaitingApproval(_) | EffectError::Rejected(_))) => {
                let kind = if matches!(err, EffectError::Rejected(_)) {
                    crate::ErrorKind::Rejected
                } else {
                    crate::ErrorKind::AwaitingApproval
                };
                let gate = Terminate::Gate {
                    kind,
                    message: err.to_string(),
                    source: ctx.call_source().map(str::to_owned),
                    pos: ctx.call_position(),
                };
                Err(EvalAltResult::ErrorTerminated(Dynamic::from(gate), ctx.call_position()).into())
            }
            Err(err) => Err(effect_failed(ctx, &err)),
        }
    }

    fn destination(&self, ctx: &NativeCallContext, kind: &str, value: &str) -> Rr<ImmutableString> {
        if kind.trim().is_empty() {
            return Err(misuse(ctx, "destination(kind, value): the kind is empty"));
        }
        self.effects
            .destination(kind, value)
            .map(|()| value.into())
            .map_err(|err| effect_failed(ctx, &err))
    }

    fn lock(&self, ctx: &NativeCallContext, credential: &str) -> Rr<()> {
        if credential.trim().is_empty() {
            return Err(misuse(
                ctx,
                "lock(credential): the credential name is empty",
            ));
        }
        self.effects
            .lock(credential)
            .map_err(|err| effect_failed(ctx, &err))
    }

    fn defer(
        &self,
        ctx: &NativeCallContext,
        plugin: &PluginHandle,
        operation: &str,
        input: Dynamic,
        delay_secs: INT,
        description: &str,
    ) -> Rr<ImmutableString> {
        let Some(Ok(desc)) = self.plugins.get(plugin.name.as_str()) else {
            return Err(misuse(ctx, &format!("unknown plugin `{}`", plugin.name)));
        };
        if desc.operation(operation).is_none() {
            return Err(misuse(
                ctx,
                &format!("plugin `{}` has no operation `{operation}`", plugin.name),
            ));
        }
        if delay_secs < 0 {
            return Err(misuse(ctx, "defer: the delay must not be negative"));
        }
        let input = match to_value(&input) {
            Ok(v @ Value::Map(_)) => v,
            Ok(_) => return Err(misuse(ctx, "defer: the input must be an object map")),
            Err(why) => return Err(misuse(ctx, &format!("defer input: {why}"))),
        };
        self.effects
            .defer(&plugin.name, operation, input, delay_secs, description)
            .map(Into::into)
            .map_err(|err| {
                raise(
                    ctx,
                    effect_error_map(&err, Some((plugin.name.as_str(), operation))),
                )
            })
    }

    fn param(&self, name: &str) -> Option<Dynamic> {
        self.params.get(name).map(|v| v.as_str().into())
    }

    fn now(&self, ctx: &NativeCallContext) -> Rr<INT> {
        self.effects.now().map_err(|err| effect_failed(ctx, &err))
    }

    fn date_in_days(&self, ctx: &NativeCallContext, days: INT) -> Rr<ImmutableString> {
        let now = self.now(ctx)?;
        let today = time::OffsetDateTime::from_unix_timestamp(now)
            .map_err(|err| misuse(ctx, &format!("the clock reads {now}, not a date: {err}")))?
            .date();
        let date = i32::try_from(days)
            .ok()
            .and_then(|d| today.to_julian_day().checked_add(d))
            .and_then(|day| time::Date::from_julian_day(day).ok())
            .ok_or_else(|| misuse(ctx, &format!("{days} days from today is not a date")))?;
        Ok(format!(
            "{:04}-{:02}-{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        )
        .into())
    }

    fn log(&self, level: LogLevel, message: &Dynamic) {
        self.effects.log(level, &redact(&render(message)));
    }
}

/// Registers the custom types and every runbook function on `engine`.
pub(crate) fn register(engine: &mut Engine, host: &Arc<Host>) {
    register_types(engine);
    register_secrets(engine, host);
    register_prompts(engine, host);
    register_misc(engine, host);
    register_plugins(engine, host);
}

fn register_types(engine: &mut Engine) {
    engine
        .register_type_with_name::<SecretHandle>("Secret")
        .register_fn("to_string", |_: &mut SecretHandle| MASK)
        .register_fn("to_debug", |_: &mut SecretHandle| MASK)
        .register_type_with_name::<PluginHandle>("Plugin")
        .register_fn("to_string", |p: &mut PluginHandle| plugin_text(p))
        .register_fn("to_debug", |p: &mut PluginHandle| plugin_text(p));

    // Concatenation would go through `to_string` and quietly give "***";
    // an error tells the author the value never becomes text.
    fn refuse(ctx: &NativeCallContext) -> Rr<ImmutableString> {
        Err(misuse(ctx, SECRET_AS_TEXT))
    }
    engine
        .register_fn(
            "+",
            |ctx: NativeCallContext, _: ImmutableString, _: SecretHandle| refuse(&ctx),
        )
        .register_fn(
            "+",
            |ctx: NativeCallContext, _: SecretHandle, _: ImmutableString| refuse(&ctx),
        )
        .register_fn(
            "+",
            |ctx: NativeCallContext, _: SecretHandle, _: SecretHandle| refuse(&ctx),
        )
        .register_fn("+", |ctx: NativeCallContext, _: char, _: SecretHandle| {
            refuse(&ctx)
        })
        .register_fn("+", |ctx: NativeCallContext, _: SecretHandle, _: char| {
            refuse(&ctx)
        })
        .register_fn(
            "+=",
            |ctx: NativeCallContext, _: &mut ImmutableString, _: SecretHandle| {
                refuse(&ctx).map(drop)
            },
        )
        .register_fn(
            "append",
            |ctx: NativeCallContext, _: &mut ImmutableString, _: SecretHandle| {
                refuse(&ctx).map(drop)
            },
        )
        .register_fn("is_secret", |value: Dynamic| value.is::<SecretHandle>());

    // Rhai answers `false` when it cannot compare two values, so
    // `answer == "prod"` on a secret would quietly take the other branch.
    // Comparing a secret with text or another secret is refused instead: a
    // plugin compares values (a runbook comparing secrets one guess at a
    // time could learn them). `secret != ()`, a test for "none", stays.
    fn compared(ctx: &NativeCallContext) -> Rr<bool> {
        Err(misuse(ctx, SECRET_AS_TEXT))
    }
    for op in ["==", "!="] {
        engine
            .register_fn(
                op,
                |ctx: NativeCallContext, _: SecretHandle, _: ImmutableString| compared(&ctx),
            )
            .register_fn(
                op,
                |ctx: NativeCallContext, _: ImmutableString, _: SecretHandle| compared(&ctx),
            )
            .register_fn(
                op,
                |ctx: NativeCallContext, _: SecretHandle, _: SecretHandle| compared(&ctx),
            );
    }
}

fn register_secrets(engine: &mut Engine, host: &Arc<Host>) {
    let h = host.clone();
    engine.register_fn(
        "secret",
        move |ctx: NativeCallContext, name: &str| -> Rr<SecretHandle> {
            h.effects
                .secret(name)
                .map(SecretHandle)
                .map_err(|err| effect_failed(&ctx, &err))
        },
    );
    let h = host.clone();
    engine.register_fn(
        "store_secret",
        move |ctx: NativeCallContext, name: &str, value: Dynamic| -> Rr<()> {
            let Some(handle) = value.read_lock::<SecretHandle>().map(|s| s.0.clone()) else {
                return Err(misuse(
                    &ctx,
                    &format!(
                        "store_secret(\"{name}\", …) takes a secret handle (from secret, \
                         prompt_secret, random_secret or a plugin's secret output), not a {}",
                        value.type_name()
                    ),
                ));
            };
            h.effects
                .store_secret(name, &handle)
                .map_err(|err| effect_failed(&ctx, &err))
        },
    );
    let h = host.clone();
    engine.register_fn(
        "random_secret",
        move |ctx: NativeCallContext, bytes: INT| -> Rr<SecretHandle> {
            if !(1..=MAX_RANDOM_BYTES).contains(&bytes) {
                return Err(misuse(
                    &ctx,
                    &format!("random_secret({bytes}): ask for 1 to {MAX_RANDOM_BYTES} bytes"),
                ));
            }
            let bytes = usize::try_from(bytes).unwrap_or(1);
            h.effects
                .random_secret(bytes)
                .map(SecretHandle)
                .map_err(|err| effect_failed(&ctx, &err))
        },
    );
}

fn register_prompts(engine: &mut Engine, host: &Arc<Host>) {
    let h = host.clone();
    engine.register_fn("prompt", move |ctx: NativeCallContext, text: &str| {
        h.prompt_text(&ctx, &input_name(text), text)
    });
    let h = host.clone();
    engine.register_fn(
        "prompt",
        move |ctx: NativeCallContext, name: &str, text: &str| h.prompt_text(&ctx, name, text),
    );
    let h = host.clone();
    engine.register_fn(
        "prompt_secret",
        move |ctx: NativeCallContext, text: &str| h.prompt_secret(&ctx, &input_name(text), text),
    );
    let h = host.clone();
    engine.register_fn(
        "prompt_secret",
        move |ctx: NativeCallContext, name: &str, text: &str| h.prompt_secret(&ctx, name, text),
    );
    let h = host.clone();
    engine.register_fn("confirm", move |ctx: NativeCallContext, text: &str| {
        h.confirm(&ctx, &input_name(text), text)
    });
    let h = host.clone();
    engine.register_fn(
        "confirm",
        move |ctx: NativeCallContext, name: &str, text: &str| h.confirm(&ctx, name, text),
    );
}

/// The longest approval gate id: it becomes part of a request id operators
/// type.
const MAX_APPROVAL_ID_LEN: usize = 64;

/// Reads `approval`'s map, refusing what would make an unclear request.
fn approval_request(ctx: &NativeCallContext, map: &Map) -> Rr<ApprovalRequest> {
    const USAGE: &str = "approval(#{ id, title, summary, environments, approvers })";
    for key in map.keys() {
        if ![
            "id",
            "title",
            "summary",
            "environments",
            "approvers",
            "poll",
        ]
        .contains(&key.as_str())
        {
            return Err(misuse(ctx, &format!("{USAGE}: unknown field `{key}`")));
        }
    }
    let text = |key: &str, required: bool| -> Rr<String> {
        match map.get(key) {
            Some(v) if v.is_string() => Ok(v.clone().into_string().unwrap_or_default()),
            None if !required => Ok(String::new()),
            None => Err(misuse(ctx, &format!("{USAGE}: `{key}` is required"))),
            Some(v) => Err(misuse(
                ctx,
                &format!("{USAGE}: `{key}` must be a string, not {}", v.type_name()),
            )),
        }
    };
    let list = |key: &str| -> Rr<Vec<String>> {
        let Some(v) = map.get(key) else {
            return Ok(Vec::new());
        };
        let items = v.clone().try_cast::<Array>().ok_or_else(|| {
            misuse(
                ctx,
                &format!("{USAGE}: `{key}` must be an array of strings"),
            )
        })?;
        items
            .into_iter()
            .map(|i| {
                i.into_string().map_err(|_| {
                    misuse(
                        ctx,
                        &format!("{USAGE}: `{key}` must be an array of strings"),
                    )
                })
            })
            .collect()
    };
    let id = text("id", true)?;
    if id.is_empty()
        || id.len() > MAX_APPROVAL_ID_LEN
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(misuse(
            ctx,
            &format!(
                "{USAGE}: `id` must be 1 to {MAX_APPROVAL_ID_LEN} letters, digits, `-`, `_` or `.`, not `{id}`"
            ),
        ));
    }
    let title = text("title", true)?;
    if title.trim().is_empty() {
        return Err(misuse(ctx, &format!("{USAGE}: `title` is empty")));
    }
    let poll = match map.get("poll") {
        None => None,
        Some(p) => Some(approval_poll(ctx, p)?),
    };
    Ok(ApprovalRequest {
        id,
        title,
        summary: text("summary", false)?,
        environments: list("environments")?,
        approvers: list("approvers")?,
        poll,
    })
}

/// Reads `poll: #{ plugin, operation, input, every_secs, wait_secs,
/// deadline_secs }`.
fn approval_poll(ctx: &NativeCallContext, value: &Dynamic) -> Rr<crate::effects::ApprovalPoll> {
    const USAGE: &str =
        "approval poll: #{ plugin, operation, input, every_secs, wait_secs, deadline_secs }";
    let map = value
        .clone()
        .try_cast::<Map>()
        .ok_or_else(|| misuse(ctx, &format!("{USAGE} must be a map")))?;
    let text = |key: &str| -> Rr<String> {
        map.get(key)
            .and_then(|v| v.clone().into_string().ok())
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| misuse(ctx, &format!("{USAGE}: `{key}` is required text")))
    };
    let secs = |key: &str, default: INT, min: INT| -> Rr<u64> {
        let n = match map.get(key) {
            None => default,
            Some(v) => v
                .as_int()
                .map_err(|_| misuse(ctx, &format!("{USAGE}: `{key}` must be a whole number")))?,
        };
        if n < min {
            return Err(misuse(
                ctx,
                &format!("{USAGE}: `{key}` must be at least {min}"),
            ));
        }
        Ok(u64::try_from(n).unwrap_or(0))
    };
    for key in map.keys() {
        if ![
            "plugin",
            "operation",
            "input",
            "every_secs",
            "wait_secs",
            "deadline_secs",
        ]
        .contains(&key.as_str())
        {
            return Err(misuse(ctx, &format!("{USAGE}: unknown field `{key}`")));
        }
    }
    let plugin = match map.get("plugin") {
        Some(p) if p.is::<PluginHandle>() => p.clone().cast::<PluginHandle>().name.to_string(),
        _ => text("plugin")?,
    };
    let input = match map.get("input") {
        None => Value::Map(Default::default()),
        Some(v) => to_value(v).map_err(|e| misuse(ctx, &format!("{USAGE}: `input`: {e}")))?,
    };
    Ok(crate::effects::ApprovalPoll {
        plugin,
        operation: text("operation")?,
        input,
        every_secs: secs("every_secs", 60, 1)?,
        wait_secs: secs("wait_secs", 0, 0)?,
        deadline_secs: secs("deadline_secs", 7 * 24 * 3600, 1)?,
    })
}

fn register_misc(engine: &mut Engine, host: &Arc<Host>) {
    let h = host.clone();
    engine.register_fn("approval", move |ctx: NativeCallContext, request: Map| {
        h.approval(&ctx, &request)
    });
    let h = host.clone();
    engine.register_fn("info", move |message: Dynamic| {
        h.log(LogLevel::Info, &message)
    });
    let h = host.clone();
    engine.register_fn("warn", move |message: Dynamic| {
        h.log(LogLevel::Warn, &message)
    });
    engine.register_fn(
        "fail",
        |ctx: NativeCallContext, message: Dynamic| -> Rr<()> {
            let fail = Terminate::Fail {
                message: render(&message),
                source: ctx.call_source().map(str::to_owned),
                pos: ctx.call_position(),
            };
            Err(EvalAltResult::ErrorTerminated(Dynamic::from(fail), ctx.call_position()).into())
        },
    );

    let h = host.clone();
    engine.register_fn("dry_run", move || h.effects.is_dry_run());

    let h = host.clone();
    engine.register_fn("now", move |ctx: NativeCallContext| h.now(&ctx));
    let h = host.clone();
    engine.register_fn("today", move |ctx: NativeCallContext| {
        h.date_in_days(&ctx, 0)
    });
    let h = host.clone();
    engine.register_fn("date_in_days", move |ctx: NativeCallContext, days: INT| {
        h.date_in_days(&ctx, days)
    });

    fn json(ctx: &NativeCallContext, value: &Dynamic) -> Rr<ImmutableString> {
        to_value(value)
            .map(|v| v.to_redacted_json().to_string().into())
            .map_err(|why| misuse(ctx, &format!("to_json: {why}")))
    }
    // The typed overloads take precedence over Rhai's own `to_json` for maps.
    engine
        .register_fn("to_json", |ctx: NativeCallContext, v: Dynamic| {
            json(&ctx, &v)
        })
        .register_fn("to_json", |ctx: NativeCallContext, v: &mut Map| {
            json(&ctx, &Dynamic::from_map(v.clone()))
        })
        .register_fn("to_json", |ctx: NativeCallContext, v: &mut Array| {
            json(&ctx, &Dynamic::from_array(v.clone()))
        });

    let h = host.clone();
    engine.register_fn(
        "param",
        move |ctx: NativeCallContext, name: &str| -> Rr<Dynamic> {
            h.param(name).ok_or_else(|| {
                raise(
                    &ctx,
                    error_map(
                        "missing-input",
                        &format!("missing parameter `{name}`: pass --set {name}=VALUE"),
                    ),
                )
            })
        },
    );
    let h = host.clone();
    engine.register_fn("param", move |name: &str, default: Dynamic| {
        h.param(name).unwrap_or(default)
    });

    // Rhai's `sleep` blocks the thread outside every limit and effect.
    fn no_sleep(ctx: &NativeCallContext) -> Rr<()> {
        Err(misuse(
            ctx,
            "sleep is not available in runbooks; a plugin operation waits for its provider",
        ))
    }
    engine
        .register_fn("sleep", |ctx: NativeCallContext, _: INT| no_sleep(&ctx))
        .register_fn("sleep", |ctx: NativeCallContext, _: rhai::FLOAT| {
            no_sleep(&ctx)
        });
}

fn register_plugins(engine: &mut Engine, host: &Arc<Host>) {
    let h = host.clone();
    engine.register_fn("plugin", move |ctx: NativeCallContext, name: &str| {
        h.plugin(&ctx, name)
    });
    let h = host.clone();
    engine.register_fn(
        "invoke",
        move |ctx: NativeCallContext, p: &mut PluginHandle, operation: &str, input: Dynamic| {
            h.invoke(&ctx, p, operation, input)
        },
    );
    let h = host.clone();
    engine.register_fn(
        "invoke",
        move |ctx: NativeCallContext, p: &mut PluginHandle, operation: &str| {
            h.invoke(&ctx, p, operation, Dynamic::UNIT)
        },
    );

    let h = host.clone();
    engine.register_fn(
        "destination",
        move |ctx: NativeCallContext, kind: &str, value: &str| h.destination(&ctx, kind, value),
    );
    let h = host.clone();
    engine.register_fn("lock", move |ctx: NativeCallContext, credential: &str| {
        h.lock(&ctx, credential)
    });
    let h = host.clone();
    engine.register_fn(
        "defer",
        move |ctx: NativeCallContext,
              p: &mut PluginHandle,
              operation: &str,
              input: Dynamic,
              delay_secs: INT,
              description: &str| {
            h.defer(&ctx, p, operation, input, delay_secs, description)
        },
    );
    let h = host.clone();
    engine.register_fn(
        "defer",
        move |ctx: NativeCallContext,
              p: &mut PluginHandle,
              operation: &str,
              input: Dynamic,
              delay_secs: INT| {
            let description = format!("{}.{operation}", p.name);
            h.defer(&ctx, p, operation, input, delay_secs, &description)
        },
    );

    // Every operation of every plugin that loaded becomes a method on
    // `Plugin`; the method checks that the handle's own plugin has it.
    let mut operations: Vec<String> = host
        .plugins
        .values()
        .filter_map(|d| d.as_ref().ok())
        .flat_map(|d| d.operations.iter().map(|op| op.name.clone()))
        .chain(host.methods.iter().cloned())
        .filter(|name| !RESERVED_METHODS.contains(&name.as_str()))
        .collect();
    operations.sort();
    operations.dedup();
    for operation in operations {
        let (h, op) = (host.clone(), operation.clone());
        engine.register_fn(
            operation.as_str(),
            move |ctx: NativeCallContext, p: &mut PluginHandle| {
                h.invoke(&ctx, p, &op, Dynamic::UNIT)
            },
        );
        let (h, op) = (host.clone(), operation.clone());
        engine.register_fn(
            operation.as_str(),
            move |ctx: NativeCallContext, p: &mut PluginHandle, input: Dynamic| {
                h.invoke(&ctx, p, &op, input)
            },
        );
    }
}
