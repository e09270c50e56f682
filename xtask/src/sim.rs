//! A provider simulator as a child process: started with
//! `keycycle sim PROVIDER --port 0`, driven through its control API, and
//! stopped when dropped so that no failure leaves it running.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

/// How long the simulator may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The marker in the line the simulator prints once it listens.
const LISTENING: &str = "listening on ";

/// A running `keycycle sim demo`.
pub struct Sim {
    child: Child,
    url: String,
    agent: ureq::Agent,
}

/// One token of the simulator's true state, without its value.
pub struct TokenSummary {
    pub id: u64,
    pub name: String,
    pub active: bool,
}

impl Sim {
    /// Starts the demo token service on a free port and waits until it
    /// listens.
    pub fn start(keycycle: &Path) -> Result<Sim> {
        Sim::start_provider(keycycle, "demo")
    }

    /// Starts `keycycle sim PROVIDER` on a free port and waits until it
    /// listens.
    pub fn start_provider(keycycle: &Path, provider: &str) -> Result<Sim> {
        let mut command = Command::new(keycycle);
        command
            .args(["sim", provider, "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {} sim {provider}", keycycle.display()))?;
        // The address line may come on either stream; both are drained for
        // the simulator's whole life so it never blocks on a full pipe.
        let (found, address) = mpsc::channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let found = found.clone();
            std::thread::spawn(move || watch(stream, &found));
        }
        drop(found);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            // Only 127.0.0.1 is ever asked; a proxy from the environment
            // would have no business seeing the demo's tokens.
            .proxy(None)
            .build()
            .into();
        let mut sim = Sim {
            child,
            url: String::new(),
            agent,
        };
        sim.url = match address.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(_) => match sim.child.try_wait() {
                Ok(Some(status)) => bail!(
                    "the simulator stopped before it listened ({status}); see its output above"
                ),
                _ => bail!("the simulator did not say where it listens within {START_TIMEOUT:?}"),
            },
        };
        Ok(sim)
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs `body` to the control API at `path` (under `/_sim`) and
    /// returns the JSON answer (`null` for an empty one).
    pub fn control(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        self.control_at(&self.url, path, body)
    }

    /// [`Sim::control`] on another server of this simulator's account (an
    /// IBM Secrets Manager instance started through the control API).
    pub fn control_at(
        &self,
        base_url: &str,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let mut response = self
            .agent
            .post(format!("{}/_sim{path}", base_url.trim_end_matches('/')))
            .send_json(body)
            .context("cannot reach the simulator's control API")?;
        let status = response.status();
        let text = response
            .body_mut()
            .read_to_string()
            .context("cannot read the simulator's answer")?;
        if !status.is_success() {
            bail!("the simulator refused POST /_sim{path} ({status}): {text}");
        }
        if text.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text).context("the simulator's answer is not JSON")
    }

    /// The true state of another server of this simulator's account (an
    /// IBM Secrets Manager instance started through the control API).
    pub fn state_at(&self, base_url: &str) -> Result<serde_json::Value> {
        let mut response = self
            .agent
            .get(format!("{}/_sim/state", base_url.trim_end_matches('/')))
            .call()
            .context("cannot reach the simulator's control API")?;
        let text = response
            .body_mut()
            .read_to_string()
            .context("cannot read the simulator's answer")?;
        serde_json::from_str(&text).context("the simulator's state is not JSON")
    }

    /// GETs `path` of the control API (under `/_sim`) as JSON.
    pub fn get(&self, path: &str) -> Result<serde_json::Value> {
        let mut response = self
            .agent
            .get(format!("{}/_sim{path}", self.url))
            .call()
            .context("cannot reach the simulator's control API")?;
        if !response.status().is_success() {
            bail!(
                "the simulator refused GET /_sim{path} ({})",
                response.status()
            );
        }
        let text = response
            .body_mut()
            .read_to_string()
            .context("cannot read the simulator's answer")?;
        serde_json::from_str(&text).context("the simulator's answer is not JSON")
    }

    /// DELETEs `path` of the control API (under `/_sim`).
    pub fn delete(&self, path: &str) -> Result<()> {
        let response = self
            .agent
            .delete(format!("{}/_sim{path}", self.url))
            .call()
            .context("cannot reach the simulator's control API")?;
        if !response.status().is_success() {
            bail!(
                "the simulator refused DELETE /_sim{path} ({})",
                response.status()
            );
        }
        Ok(())
    }

    /// The simulator's whole true state, values included: keep it away
    /// from any output.
    pub fn state(&self) -> Result<serde_json::Value> {
        let mut response = self
            .agent
            .get(format!("{}/_sim/state", self.url))
            .call()
            .context("cannot reach the simulator's control API")?;
        if response.status() != 200 {
            bail!(
                "the simulator's state request answered {}",
                response.status()
            );
        }
        response
            .body_mut()
            .read_json()
            .context("the simulator's state is not JSON")
    }

    /// Seeds an active token with a known value; returns its id.
    pub fn seed_token(&self, name: &str, value: &str) -> Result<u64> {
        let mut response = self
            .agent
            .post(format!("{}/_sim/tokens", self.url))
            .send_json(json!({ "name": name, "token": value }))
            .context("cannot reach the simulator's control API")?;
        let status = response.status();
        let body: serde_json::Value = response.body_mut().read_json().with_context(|| {
            format!("the simulator answered {status} with a body that is not JSON")
        })?;
        if status != 201 {
            bail!(
                "the simulator refused the seeded token ({status}): {}",
                body["message"]
            );
        }
        body["id"]
            .as_u64()
            .with_context(|| format!("the simulator's answer has no token id: {body}"))
    }

    /// The true state of every token, revoked ones included, without values.
    pub fn tokens(&self) -> Result<Vec<TokenSummary>> {
        let mut response = self
            .agent
            .get(format!("{}/_sim/state", self.url))
            .call()
            .context("cannot reach the simulator's control API")?;
        let status = response.status();
        if status != 200 {
            bail!("the simulator's state request answered {status}");
        }
        let state: serde_json::Value = response
            .body_mut()
            .read_json()
            .context("the simulator's state is not JSON")?;
        let tokens = state["tokens"]
            .as_array()
            .context("the simulator's state has no token list")?;
        tokens
            .iter()
            .map(|t| {
                Ok(TokenSummary {
                    id: t["id"].as_u64().context("a token without an id")?,
                    name: t["name"]
                        .as_str()
                        .context("a token without a name")?
                        .to_owned(),
                    active: t["active"]
                        .as_bool()
                        .context("a token without an active flag")?,
                })
            })
            .collect()
    }

    /// Stops the simulator; its state is in memory only and goes with it.
    pub fn stop(mut self) -> Result<()> {
        self.kill().context("cannot stop the simulator")
    }

    fn kill(&mut self) -> std::io::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        self.child.wait().map(|_| ())
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Reads one output stream of the simulator: sends the listening address
/// once, and passes every other line on so its errors stay visible.
fn watch(stream: Box<dyn Read + Send>, found: &mpsc::Sender<String>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        match address_in(&line) {
            Some(url) => {
                let _ = found.send(url);
            }
            None => eprintln!("    sim: {line}"),
        }
    }
}

/// `keycycle sim demo: listening on http://127.0.0.1:PORT (…)` →
/// `http://127.0.0.1:PORT`.
fn address_in(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(LISTENING)?;
    let url = rest.split_whitespace().next()?;
    let port = url.strip_prefix("http://127.0.0.1:")?;
    port.parse::<u16>().ok().filter(|p| *p != 0)?;
    Some(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::address_in;

    #[test]
    fn finds_the_address_in_the_listening_line() {
        assert_eq!(
            address_in(
                "keycycle sim demo: listening on http://127.0.0.1:41234 (control API under /_sim/)"
            ),
            Some("http://127.0.0.1:41234".to_owned())
        );
    }

    #[test]
    fn ignores_other_lines_and_bad_ports() {
        assert_eq!(address_in("some log line"), None);
        assert_eq!(address_in("listening on http://127.0.0.1:0 (x)"), None);
        assert_eq!(address_in("listening on http://127.0.0.1:99999 (x)"), None);
        assert_eq!(address_in("listening on http://0.0.0.0:8080 (x)"), None);
    }
}
