//! Answers to a runbook's prompts: from `--input NAME=SRC` when given, from
//! the operator at a terminal otherwise, and a clear error when neither is
//! possible. Secret answers never come from the command line itself, and an
//! answer read from a file or an environment variable is a secret unless
//! the operator declares it plain (`--plain-input NAME`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Result, bail};
use keycycle_runbook::{Answer, EffectError, Prompt, PromptKind, RunbookError};

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

/// What the operator declared about the answer to a `prompt()`, whatever
/// its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// `--plain-input NAME`: ordinary text, even from a file or a variable.
    Plain,
    /// `--secret-input NAME`: a secret, even when typed at a terminal.
    Secret,
}

impl Declared {
    pub fn flag(self) -> &'static str {
        match self {
            Declared::Plain => "--plain-input",
            Declared::Secret => "--secret-input",
        }
    }
}

/// Everything the command line says about the run's prompts: the answers
/// (`--input`) and which text answers are plain or secret.
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub sources: BTreeMap<String, Source>,
    pub declared: BTreeMap<String, Declared>,
    /// Names of the `prompt()` answers made secret only because they came
    /// from a file or a variable. Shared by the clones of one `Given`, so
    /// that after a failed run `main` can name them (see [`Given::explain`]).
    made_secret: Arc<Mutex<BTreeSet<String>>>,
}

impl Given {
    /// From the `--input`, `--plain-input` and `--secret-input` values.
    pub fn parse(inputs: &[String], plain: &[String], secret: &[String]) -> Result<Given> {
        let mut given = Given::default();
        for item in inputs {
            let (name, source) = parse_input(item)?;
            given.sources.insert(name, source);
        }
        for (names, declared) in [(plain, Declared::Plain), (secret, Declared::Secret)] {
            for name in names {
                if name.is_empty() {
                    bail!("{} needs a prompt's NAME", declared.flag());
                }
                match given.declared.insert(name.clone(), declared) {
                    Some(other) if other != declared => bail!(
                        "`{name}` is given both --plain-input and --secret-input; \
                         say once whether its answer is plain text or a secret"
                    ),
                    _ => {}
                }
            }
        }
        Ok(given)
    }

    /// The kind of answer the prompt `name` of kind `kind` takes when it is
    /// answered from `source` (`None`: at the terminal). Only a `prompt()`
    /// changes: `--secret-input` makes it a secret, `--plain-input` keeps
    /// it text, and without either a file or a variable makes it a secret,
    /// since that is how a shared runner hands over secrets. A yes/no is
    /// never a secret.
    pub fn kind_of(&self, name: &str, kind: PromptKind, source: Option<&Source>) -> PromptKind {
        match (kind, self.declared.get(name), source) {
            (PromptKind::Text, Some(Declared::Secret), _) => PromptKind::Secret,
            (PromptKind::Text, Some(Declared::Plain), _) => PromptKind::Text,
            (PromptKind::Text, None, Some(Source::File(_) | Source::Env(_))) => PromptKind::Secret,
            (kind, _, _) => kind,
        }
    }

    /// Whether the answer to the `prompt()` `name` is a secret only because
    /// of its source: the case `--plain-input NAME` undoes.
    pub fn secret_by_source(&self, name: &str, kind: PromptKind, source: &Source) -> bool {
        kind == PromptKind::Text
            && !self.declared.contains_key(name)
            && self.kind_of(name, kind, Some(source)) == PromptKind::Secret
    }

    /// `err`, with a hint when the run failed because the runbook used a
    /// secret handle as text and some of its answers are secrets only
    /// because they came from a file or a variable: the runbook's own
    /// message cannot know where the handle came from.
    pub fn explain(&self, err: anyhow::Error) -> anyhow::Error {
        let used_as_text = err
            .downcast_ref::<RunbookError>()
            .is_some_and(RunbookError::secret_used_as_text);
        let names: Vec<String> = self
            .made_secret
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        if !used_as_text || names.is_empty() {
            return err;
        }
        let flags: Vec<String> = names.iter().map(|n| format!("--plain-input {n}")).collect();
        let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        err.context(format!(
            "the runbook used a secret as text; the answer to {} came from a file or an \
             environment variable, so the runbook got it as a secret. If it is ordinary text, \
             run again with {}",
            quoted.join(", "),
            flags.join(" ")
        ))
    }
}

pub struct Inputs {
    given: Given,
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
    pub fn new(given: Given) -> Inputs {
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
        let source = self.given.sources.get(&prompt.name);
        let by_source =
            source.is_some_and(|s| self.given.secret_by_source(&prompt.name, prompt.kind, s));
        // From here on the prompt is what the operator's answer makes it: a
        // `prompt()` answered from a file is read, checked and journaled as
        // a secret, and the runbook gets a secret handle.
        let prompt = Prompt {
            kind: self.given.kind_of(&prompt.name, prompt.kind, source),
            ..prompt.clone()
        };
        let answer = match source {
            Some(source) => self.read_source(&prompt, source, by_source),
            None => self.unasked(&prompt),
        };
        if matches!(answer, Err(EffectError::MissingInput { .. })) {
            *self.unanswered.lock().unwrap_or_else(|p| p.into_inner()) = Some(Unanswered {
                name: prompt.name.clone(),
                kind: prompt.kind,
            });
        }
        answer
    }

    /// A prompt no `--input` answers: asked at the terminal if there is one.
    fn unasked(&self, prompt: &Prompt) -> Result<Answer, EffectError> {
        if self.interactive {
            return self.ask(prompt);
        }
        let n = &prompt.name;
        let how = match prompt.kind {
            PromptKind::Secret => format!("--input {n}=@FILE or --input {n}=env:VAR"),
            PromptKind::Confirm => format!("--input {n}=yes (or no)"),
            PromptKind::Text => format!(
                "--input {n}=VALUE, --input {n}=@FILE or --input {n}=env:VAR ({})",
                plain_hint(n)
            ),
        };
        Err(EffectError::MissingInput {
            name: n.clone(),
            hint: format!(
                "the runbook asks \"{}\" and there is no terminal to ask on; pass {how}",
                prompt.text
            ),
        })
    }

    /// The answer `source` gives; `by_source`: a `prompt()` answer that is
    /// a secret only because of where it comes from.
    fn read_source(
        &self,
        prompt: &Prompt,
        source: &Source,
        by_source: bool,
    ) -> Result<Answer, EffectError> {
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
        // The text may be a secret: wipe this copy once the answer holds it.
        let text = zeroize::Zeroizing::new(text);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        let answer = to_answer(prompt, text).map_err(|why| {
            missing(if by_source {
                format!("{why}; {}", plain_hint(&prompt.name))
            } else {
                why
            })
        })?;
        if by_source {
            self.given
                .made_secret
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(prompt.name.clone());
        }
        Ok(answer)
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

/// What `--plain-input` is for, said where an answer turned out secret.
pub fn plain_hint(name: &str) -> String {
    format!(
        "read from a file or an environment variable, the answer is a secret unless \
         --plain-input {name} is given"
    )
}

fn to_answer(prompt: &Prompt, text: &str) -> Result<Answer, String> {
    // The runbook crate owns what a valid answer is, so `--input` values can
    // be checked against the runbook's prompts before a run starts too.
    prompt.kind.parse_answer(text)
}

impl keycycle_engine::Answers for Inputs {
    fn answer(&self, prompt: &Prompt) -> Result<Answer, EffectError> {
        Inputs::answer(self, prompt)
    }
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

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_prompt_answer_from_a_file_or_variable_is_a_secret_unless_declared_plain() {
        let given = Given::parse(
            &names(&["a=@f", "b=env:B", "c=text", "p=@f", "s=text"]),
            &names(&["p"]),
            &names(&["s", "typed"]),
        )
        .unwrap();
        let kind = |name: &str, kind| given.kind_of(name, kind, given.sources.get(name));
        assert_eq!(kind("a", PromptKind::Text), PromptKind::Secret);
        assert_eq!(kind("b", PromptKind::Text), PromptKind::Secret);
        assert_eq!(kind("c", PromptKind::Text), PromptKind::Text);
        assert_eq!(kind("p", PromptKind::Text), PromptKind::Text);
        assert_eq!(kind("s", PromptKind::Text), PromptKind::Secret);
        // Typed at a terminal, hidden when declared secret.
        assert_eq!(kind("typed", PromptKind::Text), PromptKind::Secret);
        assert_eq!(kind("none", PromptKind::Text), PromptKind::Text);
        // A yes/no is never a secret; a secret prompt always is.
        assert_eq!(kind("a", PromptKind::Confirm), PromptKind::Confirm);
        assert_eq!(kind("p", PromptKind::Secret), PromptKind::Secret);
        // Only the undeclared ones are secret because of their source.
        let by_source =
            |name: &str| given.secret_by_source(name, PromptKind::Text, &given.sources[name]);
        assert!(by_source("a") && by_source("b"));
        assert!(!by_source("c") && !by_source("p") && !by_source("s"));
    }

    #[test]
    fn a_name_declared_both_plain_and_secret_is_refused() {
        let err = Given::parse(&[], &names(&["x"]), &names(&["x"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("both --plain-input and --secret-input")
        );
        // Said twice the same way is no contradiction.
        assert!(Given::parse(&[], &names(&["x", "x"]), &[]).is_ok());
    }
}
