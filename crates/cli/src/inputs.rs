//! Answers to a runbook's prompts: from `--input NAME=SRC` when given, from
//! the operator at a terminal otherwise, and a clear error when neither is
//! possible. Secret answers never come from the command line itself.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Result, bail};
use keycycle_runbook::{Answer, EffectError, Prompt, PromptKind};

/// Where an answer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `@path`: the file's contents, without the trailing newline.
    File(PathBuf),
    /// `env:VAR`: an environment variable.
    Env(String),
    /// Anything else: the text itself (refused for secret prompts, since
    /// argv is visible to every user of the machine).
    Literal(String),
}

/// Parses `NAME=SRC`.
pub fn parse_input(text: &str) -> Result<(String, Source)> {
    let Some((name, src)) = text.split_once('=') else {
        bail!("--input `{text}` must be NAME=@FILE, NAME=env:VAR or NAME=VALUE");
    };
    if name.is_empty() {
        bail!("--input `{text}` has an empty NAME");
    }
    let source = if let Some(path) = src.strip_prefix('@') {
        Source::File(PathBuf::from(path))
    } else if let Some(var) = src.strip_prefix("env:") {
        Source::Env(var.to_owned())
    } else {
        Source::Literal(src.to_owned())
    };
    Ok((name.to_owned(), source))
}

pub struct Inputs {
    given: BTreeMap<String, Source>,
    interactive: bool,
    /// The last prompt that got no answer, so the end of a journaled run
    /// can print the exact `keycycle resume` line that answers it.
    unanswered: Mutex<Option<Unanswered>>,
}

/// A prompt the run stopped at for want of an answer.
#[derive(Debug, Clone)]
pub struct Unanswered {
    pub name: String,
    pub kind: PromptKind,
}

impl Unanswered {
    /// How to give the answer on the command line: `NAME=@FILE` for a
    /// secret (never the value itself, which other users could read in the
    /// process list), `NAME=yes` for a confirmation, `NAME=VALUE` for text.
    pub fn input_form(&self) -> String {
        let n = &self.name;
        match self.kind {
            PromptKind::Secret => format!("{n}=@FILE"),
            PromptKind::Confirm => format!("{n}=yes"),
            PromptKind::Text => format!("{n}=VALUE"),
        }
    }

    /// The other forms, for the line after the command.
    pub fn alternatives(&self) -> String {
        let n = &self.name;
        match self.kind {
            PromptKind::Secret => format!("or {n}=env:VAR to read it from an environment variable"),
            PromptKind::Confirm => format!("or {n}=no"),
            PromptKind::Text => format!("or {n}=@FILE, or {n}=env:VAR"),
        }
    }
}

impl Inputs {
    pub fn new(given: BTreeMap<String, Source>) -> Inputs {
        Inputs {
            given,
            interactive: std::io::stdin().is_terminal() && std::io::stderr().is_terminal(),
            unanswered: Mutex::new(None),
        }
    }

    /// The prompt the run last stopped at without an answer, if any.
    pub fn unanswered(&self) -> Option<Unanswered> {
        self.unanswered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn answer(&self, prompt: &Prompt) -> Result<Answer, EffectError> {
        let answer = self.try_answer(prompt);
        if matches!(answer, Err(EffectError::MissingInput { .. })) {
            *self.unanswered.lock().unwrap_or_else(|p| p.into_inner()) = Some(Unanswered {
                name: prompt.name.clone(),
                kind: prompt.kind,
            });
        }
        answer
    }

    fn try_answer(&self, prompt: &Prompt) -> Result<Answer, EffectError> {
        match self.given.get(&prompt.name) {
            Some(source) => self.read_source(prompt, source),
            None if self.interactive => self.ask(prompt),
            None => {
                let n = &prompt.name;
                let how = match prompt.kind {
                    PromptKind::Secret => format!("--input {n}=@FILE or --input {n}=env:VAR"),
                    PromptKind::Confirm => format!("--input {n}=yes (or no)"),
                    PromptKind::Text => {
                        format!("--input {n}=VALUE, --input {n}=@FILE or --input {n}=env:VAR")
                    }
                };
                Err(EffectError::MissingInput {
                    name: n.clone(),
                    hint: format!(
                        "the runbook asks \"{}\" and there is no terminal to ask on; pass {how}",
                        prompt.text
                    ),
                })
            }
        }
    }

    fn read_source(&self, prompt: &Prompt, source: &Source) -> Result<Answer, EffectError> {
        let missing = |hint: String| EffectError::MissingInput {
            name: prompt.name.clone(),
            hint,
        };
        let text = match source {
            Source::File(path) => std::fs::read_to_string(path)
                .map_err(|e| missing(format!("cannot read {}: {e}", path.display())))?,
            Source::Env(var) => std::env::var(var)
                .map_err(|_| missing(format!("environment variable {var} is not set")))?,
            Source::Literal(_) if prompt.kind == PromptKind::Secret => {
                return Err(missing(
                    "a secret answer may not be given on the command line, where other users can read it; use @FILE or env:VAR".into(),
                ));
            }
            Source::Literal(v) => v.clone(),
        };
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        to_answer(prompt, text).map_err(missing)
    }

    fn ask(&self, prompt: &Prompt) -> Result<Answer, EffectError> {
        let failed = |e: std::io::Error| {
            EffectError::Failed(format!(
                "cannot read the answer to \"{}\": {e}",
                prompt.text
            ))
        };
        match prompt.kind {
            PromptKind::Secret => {
                let value = rpassword::prompt_password(format!("{} (input hidden): ", prompt.text))
                    .map_err(failed)?;
                to_answer(prompt, &value).map_err(|hint| EffectError::MissingInput {
                    name: prompt.name.clone(),
                    hint,
                })
            }
            PromptKind::Text | PromptKind::Confirm => loop {
                let suffix = if prompt.kind == PromptKind::Confirm {
                    " [y/n]"
                } else {
                    ""
                };
                err!("{}{suffix}: ", prompt.text);
                std::io::stderr().flush().map_err(failed)?;
                let mut line = String::new();
                if std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .map_err(failed)?
                    == 0
                {
                    return Err(EffectError::MissingInput {
                        name: prompt.name.clone(),
                        hint: "the terminal closed before an answer was given".into(),
                    });
                }
                match to_answer(prompt, line.trim_end_matches(['\n', '\r'])) {
                    Ok(answer) => return Ok(answer),
                    Err(e) => errln!("{e}"),
                }
            },
        }
    }
}

fn to_answer(prompt: &Prompt, text: &str) -> Result<Answer, String> {
    // The runbook crate owns what a valid answer is, so `--input` values can
    // be checked against the runbook's prompts before a run starts too.
    prompt.kind.parse_answer(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(parse_input("a=@f").unwrap().1, Source::File("f".into()));
        assert_eq!(parse_input("a=env:X").unwrap().1, Source::Env("X".into()));
        assert_eq!(
            parse_input("a=b=c").unwrap(),
            ("a".into(), Source::Literal("b=c".into()))
        );
        assert!(parse_input("novalue").is_err());
    }
}
