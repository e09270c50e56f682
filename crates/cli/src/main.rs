//! The `keycycle` command line: rotate secrets and API tokens with Rhai
//! runbooks that call sandboxed WebAssembly plugins.

// Printing goes through `out`, which masks secrets and survives a closed pipe.
#![deny(clippy::print_stdout, clippy::print_stderr)]

// First, so its macros are in scope in every other module.
#[macro_use]
mod out;

mod approvals;
mod config;
mod debug;
mod doctor;
mod durable;
mod exit;
mod hardening;
mod inputs;
mod inventory_cmd;
mod logging;
mod new_plugin;
mod plugins_cmd;
mod run;
mod secrets_cmd;
mod sim_cmd;
mod state_cmds;
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::Code;

#[derive(Parser)]
#[command(
    name = "keycycle",
    version,
    about = "Rotate secrets and API tokens with sandboxed plugins and Rhai runbooks"
)]
struct Cli {
    /// Config file [default: $KEYCYCLE_CONFIG, else keycycle.toml in this folder or a parent]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// More logging (-v debug, -vv trace, -vvv trace of every library)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less output (-q: warnings and errors, no summary lines; -qq: errors only)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,
    /// Output format of what a command prints on stdout
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Colour in log lines: auto (a terminal, and NO_COLOR unset and TERM not dumb)
    #[arg(long, global = true, value_enum, default_value_t = logging::Color::Auto)]
    color: logging::Color,
    /// Format of log lines on stderr (json: one object per line, for CI)
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a runbook
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// List and inspect the configured plugins
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Manage the encrypted secrets store
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Finish an interrupted run: replay its journal, then go on
    #[command(
        after_help = "Examples:\n  keycycle runs\n  keycycle resume 3f2a9c0d11e4b7a2\n  keycycle resume 3f2a9c0d11e4b7a2 --input new_token=@token.txt\n  keycycle resume 3f2a9c0d11e4b7a2 --retry-in-flight   # after checking the call did not happen"
    )]
    Resume(ResumeArgs),
    /// List runs that did not finish, with their state and locks
    #[command(after_help = "Example:\n  keycycle runs --output json")]
    Runs,
    /// Release a credential's lock held by a run that will not finish
    #[command(after_help = "Example:\n  keycycle unlock gitlab:pat/42")]
    Unlock {
        /// The locked credential, as `keycycle runs` lists it (refused while its run is alive)
        credential: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// Give up on a run that will not be resumed: mark it failed, release its locks
    #[command(
        after_help = "Example:\n  keycycle abandon 3f2a9c0d11e4b7a2 --reason \"token replaced by hand\""
    )]
    Abandon {
        /// The run to end, as `keycycle runs` lists it (refused while it is alive)
        run_id: String,
        /// Why, for the audit history
        #[arg(long, default_value = "abandoned by an operator")]
        reason: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
    /// Put a failed deferred action back in the queue for `keycycle cleanup`
    #[command(after_help = "Example:\n  keycycle retry 3f2a9c0d11e4b7a2-14")]
    Retry {
        /// The failed action, as `keycycle pending` lists it (RUN_ID-STEP)
        action_id: String,
    },
    /// List the change requests of approval gates that wait for a decision
    #[command(
        after_help = "Examples:\n  keycycle approvals\n  keycycle approvals --all --output json"
    )]
    Approvals {
        /// Decided requests too
        #[arg(long)]
        all: bool,
    },
    /// Approve a change request: its run goes on with `keycycle resume`
    #[command(
        after_help = "The person who started the run cannot approve its request, and the config's\n[approvals] and [runbooks.NAME] approvers say who can.\n\nExample:\n  keycycle approve 5a5de9db3527e81c:stage-prod --comment \"CHG0042 approved in CAB\""
    )]
    Approve {
        /// The request, as `keycycle approvals` lists it (RUN_ID:GATE)
        request: String,
        /// Recorded with the decision
        #[arg(long)]
        comment: Option<String>,
    },
    /// Reject a change request: its run ends rejected and releases its locks
    #[command(
        after_help = "Example:\n  keycycle reject 5a5de9db3527e81c:stage-prod --reason \"freeze until Monday\""
    )]
    Reject {
        /// The request, as `keycycle approvals` lists it (RUN_ID:GATE)
        request: String,
        /// Why; recorded with the decision and shown to the requester
        #[arg(long)]
        reason: String,
    },
    /// List deferred actions that are not done (failed ones included)
    #[command(after_help = "Example:\n  keycycle pending --output json")]
    Pending,
    /// Run the deferred actions that are due (safe from cron, CI or a CronJob)
    #[command(
        after_help = "Examples:\n  keycycle cleanup\n  */15 * * * * cd /srv/keycycle && keycycle cleanup -q"
    )]
    Cleanup,
    /// The audit history: runs, newest first
    #[command(
        after_help = "Examples:\n  keycycle history\n  keycycle history --credential gitlab:pat/42 --output json\n  keycycle history --since 7d --state failed --state needs-attention"
    )]
    History {
        /// Only runs that locked this credential
        #[arg(long)]
        credential: Option<String>,
        /// At most this many runs, the newest
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
        /// Only runs started since then: an RFC 3339 time, a date, or a duration back from now (30m, 24h, 7d)
        #[arg(long, value_name = "WHEN", value_parser = state_cmds::parse_since)]
        since: Option<i64>,
        /// Only runs in this state: running, succeeded, failed, needs-attention (repeatable)
        #[arg(long, value_name = "STATE", value_parser = state_cmds::parse_state)]
        state: Vec<keycycle_store::state::RunState>,
    },
    /// One run's timeline: who, what, each step, the end
    #[command(after_help = "Example:\n  keycycle show 3f2a9c0d11e4b7a2 --output json")]
    Show {
        /// The run, as `keycycle history` or `keycycle runs` lists it
        run_id: String,
    },
    /// Serve a provider simulator on 127.0.0.1, to rehearse runbooks
    #[command(after_help = SIM_HELP)]
    Sim(SimArgs),
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  keycycle completions bash > /etc/bash_completion.d/keycycle\n  keycycle completions zsh > \"${fpath[1]}/_keycycle\"\n  keycycle completions fish > ~/.config/fish/completions/keycycle.fish"
    )]
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Write man pages into a folder (used by `cargo xtask man`)
    #[command(hide = true)]
    Man {
        /// Where to write the pages
        dir: PathBuf,
    },
    /// Rotate inventory credentials in one process: named ones, a team's, or every due one
    #[command(after_help = ROTATE_HELP)]
    Rotate(RotateArgs),
    /// Serve the metrics of `keycycle check` over HTTP for Prometheus
    #[command(
        after_help = "Example:\n  keycycle exporter --listen 127.0.0.1:9464 --interval 600\n\nThe check runs at start and then every --interval seconds, not on each scrape."
    )]
    Exporter {
        /// Address to serve /metrics on
        #[arg(long, value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
        /// Seconds between two checks
        #[arg(long, value_name = "SECS", default_value_t = 300)]
        interval: u64,
        /// Expiry reads at once
        #[arg(long, value_name = "N", default_value_t = 8)]
        concurrency: usize,
    },
    /// List the credentials a provider has that the inventory does not rotate
    #[command(
        after_help = "Examples:\n  keycycle discover gitlab --project acme/deploy --group acme\n  keycycle discover gitlab --all --output json\n  keycycle discover gitlab --project acme/deploy --toml >> credentials.toml"
    )]
    Discover {
        /// The plugin instance to ask (it needs a `discover` operation)
        plugin: String,
        /// Use the plugin's overlay for this environment
        #[arg(long)]
        env: Option<String>,
        /// Also list the tokens and triggers of this project (repeatable)
        #[arg(long = "project", value_name = "PROJECT")]
        projects: Vec<String>,
        /// Also list the access tokens of this group (repeatable)
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// Also list what the inventory already covers
        #[arg(long)]
        all: bool,
        /// Print [credentials.ID] sections for what nothing covers
        #[arg(long)]
        toml: bool,
    },
    /// Check every inventory credential's expiry: ok, due, warning or critical
    #[command(after_help = CHECK_HELP)]
    Check(CheckArgs),
    /// Check the config, master key, store, cache, plugins and grants (read-only)
    #[command(
        after_help = "Examples:\n  keycycle doctor\n  keycycle doctor --output json\n\nExit code 0 when nothing is wrong (warnings are printed), 3 when something is."
    )]
    Doctor,
}

const RUN_HELP: &str = "\
Examples:
  keycycle run runbooks/demo-rotate.rhai --set name=ci-token
  keycycle run demo-rotate --dry-run
  keycycle run gitlab-personal-token --env prod --input new_token=@token.txt --output json

RUNBOOK is a path, or a name looked up in the runbooks folder.
Without a terminal, prompts are answered with --input NAME=@FILE,
--input NAME=env:VAR, or (not for secrets) --input NAME=VALUE.
An answer to a prompt() read from a file or a variable is a secret (the
runbook gets a secret handle) unless --plain-input NAME declares it text;
--secret-input NAME makes the answer a secret whatever its source.";

const SIM_HELP: &str = "\
Examples:
  keycycle sim demo --port 8080
  keycycle sim gitlab --port 8929
  keycycle sim zendesk --port 0
  keycycle sim ibm-sm --port 8931    # then POST /_sim/instances for stage, prod
  keycycle sim signon --port 0       # POST /_sim/tokens plays \"Create access token\"

The simulator keeps its state in memory and listens on 127.0.0.1 only.
Its control API (/_sim/...) seeds data and shows the true state.";

#[derive(Args)]
struct RunArgs {
    /// The runbook: a path, or a name in the runbooks folder
    runbook: PathBuf,
    /// A runbook parameter, readable as params.KEY (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// An answer to a prompt: NAME=@FILE, NAME=env:VAR or NAME=VALUE (repeatable);
    /// from @FILE or env:VAR, a prompt() answer is a secret unless --plain-input NAME
    #[arg(long = "input", value_name = "NAME=SRC")]
    input: Vec<String>,
    #[command(flatten)]
    declared: DeclaredArgs,
    /// Apply the plugins' overlay for this environment (also params.env)
    #[arg(long, value_name = "NAME")]
    env: Option<String>,
    /// Run read-only operations, and print the changing ones instead of sending them
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct ResumeArgs {
    /// The run to finish (see `keycycle runs`)
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    run_id: Option<String>,
    /// Finish every interrupted run (a killed `keycycle rotate` batch, say); runs still alive in another process are left to it
    #[arg(long)]
    all: bool,
    /// Answers to prompts the run has not had yet: NAME=@FILE, NAME=env:VAR or NAME=VALUE
    /// (repeatable); from @FILE or env:VAR, a prompt() answer is a secret unless --plain-input NAME
    #[arg(long = "input", value_name = "NAME=SRC")]
    input: Vec<String>,
    #[command(flatten)]
    declared: DeclaredArgs,
    /// Resume even though the runbook changed since the run started
    #[arg(long)]
    force: bool,
    /// Send again a changing call that was under way when the run died
    /// (only after checking at the provider that it did not happen)
    #[arg(long)]
    retry_in_flight: bool,
}

/// Whether a prompt()'s answer is plain text or a secret, whatever its
/// source: shared by `run` and `resume`.
#[derive(Args)]
struct DeclaredArgs {
    /// The answer to the prompt NAME is ordinary text, even from a file or variable (repeatable)
    #[arg(long = "plain-input", value_name = "NAME")]
    plain_input: Vec<String>,
    /// The answer to the prompt NAME is a secret: never from argv, typed hidden (repeatable)
    #[arg(long = "secret-input", value_name = "NAME")]
    secret_input: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

const CHECK_HELP: &str = "Examples:
  keycycle check
  keycycle check --team payments --output json
  keycycle check --prometheus /var/lib/node_exporter/textfile/keycycle.prom -q

Exit code 0 when nothing is critical (warnings and due credentials are
listed), 12 when a credential is critical or expired, 5 when an expiry
could not be read.";

const ROTATE_HELP: &str = "Examples:
  keycycle rotate --due
  keycycle rotate --due --team payments --concurrency 8 --output json
  keycycle rotate gitlab-ci-bot signon-publisher --dry-run

Each credential is its own run, with its own journal and locks: a failure
stays with its credential, and a killed batch is finished by
`keycycle resume --all`. Exit code 0 when every rotation succeeded, 5 when
one did not (the summary says which, and why).";

#[derive(Args)]
struct RotateArgs {
    /// These credentials (ids of [credentials.ID])
    ids: Vec<String>,
    /// The credentials `keycycle check` finds due, warning or critical
    #[arg(long)]
    due: bool,
    /// Only the credentials of this team's runbooks
    #[arg(long)]
    team: Option<String>,
    /// Rotations at once
    #[arg(long, value_name = "N", default_value_t = 4)]
    concurrency: usize,
    /// Plan the whole batch: every runbook runs with changes shown, not sent
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct CheckArgs {
    /// Only these credentials (ids of [credentials.ID]); all by default
    ids: Vec<String>,
    /// Only the credentials of this team's runbooks
    #[arg(long)]
    team: Option<String>,
    /// Expiry reads at once
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,
    /// Also write the metrics in the Prometheus text format to FILE (`-`: standard output), for node_exporter's textfile collector
    #[arg(long, value_name = "FILE")]
    prometheus: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List the configured plugins and whether they load
    #[command(after_help = "Example:\n  keycycle plugins list --output json")]
    List,
    /// Show a plugin's operations, what it needs, and what it is granted
    #[command(after_help = "Example:\n  keycycle plugins inspect gitlab --env prod")]
    Inspect {
        name: String,
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
    },
    /// Write a new plugin project that builds and passes its own smoke test
    #[command(
        after_help = "Examples:\n  keycycle plugins new acme-tokens\n  keycycle plugins new acme-tokens --lang python --dir ../acme-tokens\n\nThe project has a description, one read and one change with its recovery pair, a stand-in provider with a smoke test (test/run.sh) and a README."
    )]
    New {
        /// The plugin's name: lowercase letters, digits and `-`
        name: String,
        /// The language to write it in
        #[arg(long, value_enum, default_value = "rust")]
        lang: new_plugin::Lang,
        /// Where to write it (default: ./NAME); must not hold files yet
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Check a component file before granting it: its contract version, its
    /// imports against the sandbox's, and its self-description
    #[command(
        after_help = "Example:\n  keycycle plugins check target/wasm32-wasip2/release/team_tokens.wasm --output json\n\nExits 0 when nothing is wrong (warnings allowed), 3 otherwise. Needs no keycycle.toml: the plugin gets no grants, and its describe runs with none."
    )]
    Check { file: PathBuf },
    /// Print a component file's sha256, the value `[plugins.NAME] sha256` pins
    #[command(after_help = "Example:\n  keycycle plugins hash plugins/gitlab.wasm")]
    Hash { file: PathBuf },
    /// Make a minisign key pair for signing plugins: OUT.key (secret, 0600) and OUT.pub
    #[command(
        after_help = "Example:\n  keycycle plugins keygen team-a\n\nThe secret key is encrypted with the password in KEYCYCLE_SIGNING_KEY_PASSWORD when it is set.\nPut the public key in keycycle.toml: [trust] keys = { team-a = \"RW...\" }"
    )]
    Keygen { out: PathBuf },
    /// Sign a component file: writes FILE.minisig beside it
    #[command(after_help = "Example:\n  keycycle plugins sign gitlab.wasm --key team-a.key")]
    Sign {
        file: PathBuf,
        /// The minisign secret key file (`keycycle plugins keygen` or `minisign -G`)
        #[arg(long, value_name = "SECRET_KEY_FILE")]
        key: PathBuf,
    },
    /// Check that FILE.minisig is a signature of FILE by a public key
    #[command(after_help = "Example:\n  keycycle plugins verify gitlab.wasm --key team-a.pub")]
    Verify {
        file: PathBuf,
        /// The minisign public key: its base64 line, or its .pub file
        #[arg(long, value_name = "PUBLIC_KEY")]
        key: String,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Create a new master key file (mode 0600)
    #[command(after_help = "Example:\n  keycycle secrets init")]
    Init,
    /// Store a secret; the value comes from stdin, a file or an environment variable
    #[command(
        after_help = "Examples:\n  printf %s \"$TOKEN\" | keycycle secrets set gitlab/token\n  keycycle secrets set gitlab/token --from-file token.txt\n  keycycle secrets set gitlab/token --from-env GITLAB_TOKEN"
    )]
    Set {
        name: String,
        /// Read the value from this file
        #[arg(long, value_name = "FILE", conflicts_with = "from_env")]
        from_file: Option<PathBuf>,
        /// Read the value from this environment variable
        #[arg(long, value_name = "VAR")]
        from_env: Option<String>,
    },
    /// List stored secret names (never values)
    #[command(after_help = "Example:\n  keycycle secrets list --output json")]
    List,
    /// Remove a secret
    #[command(after_help = "Example:\n  keycycle secrets rm gitlab/old-token")]
    Rm { name: String },
}

#[derive(Args)]
struct SimArgs {
    /// Which provider to simulate
    #[arg(value_enum)]
    provider: sim_cmd::Provider,
    /// Port on 127.0.0.1 (0 picks a free one and prints it)
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[command(flatten)]
    tls: sim_cmd::TlsOptions,
}

impl DeclaredArgs {
    /// The run's answers (`--input`) with these declarations.
    fn given(&self, input: &[String]) -> Result<inputs::Given> {
        inputs::Given::parse(input, &self.plain_input, &self.secret_input).context(Code::Config)
    }
}

fn parse_set(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            bail!("--set `{item}` must be KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--set `{item}` has an empty KEY");
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

async fn dispatch(cli: Cli) -> Result<()> {
    debug::panic_if_asked();
    let json = cli.output == Output::Json;
    let load_config = || {
        let config = config::load(cli.config.as_deref()).context(Code::Config)?;
        match &config.file {
            Some(f) => {
                tracing::debug!(target: "keycycle", "using config {} ({})", f.display(), config.found_by)
            }
            None => {
                tracing::debug!(target: "keycycle", "no config file ({}); using defaults", config.found_by)
            }
        }
        tracing::debug!(target: "keycycle", "state folder {}", config.state_dir.display());
        anyhow::Ok(config)
    };
    match cli.command {
        Command::Run(args) => {
            let params = parse_set(&args.set).context(Code::Config)?;
            let given = args.declared.given(&args.input)?;
            let config = load_config()?;
            run::run(
                &config,
                run::RunRequest {
                    resume: None,
                    runbook: args.runbook,
                    params,
                    inputs: given.clone(),
                    env: args.env,
                    dry_run: args.dry_run,
                    json,
                    quiet: false,
                    run_id: None,
                },
                None,
            )
            .await
            .and_then(|summary| summary.outcome.map(drop))
            .map_err(|e| given.explain(e))
        }
        Command::Resume(args) if args.all => {
            let given = args.declared.given(&args.input)?;
            inventory_cmd::resume_all(
                &load_config()?,
                given,
                args.force,
                args.retry_in_flight,
                json,
            )
            .await
        }
        Command::Resume(args) => {
            let given = args.declared.given(&args.input)?;
            let config = load_config()?;
            let run_id = args.run_id.unwrap_or_default();
            let state = durable::open_state(&config)?;
            let record = state
                .run(&run_id)
                .context(Code::Config)?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "there is no run {}; list unfinished runs with `keycycle runs`",
                        run_id
                    )
                })
                .context(Code::Config)?;
            drop(state);
            run::run(
                &config,
                run::RunRequest {
                    resume: Some(run::Resume {
                        run_id: run_id.clone(),
                        force: args.force,
                        retry_in_flight: args.retry_in_flight,
                    }),
                    runbook: PathBuf::from(&record.runbook_path),
                    params: record.params.clone(),
                    inputs: given.clone(),
                    env: record.env.clone(),
                    dry_run: false,
                    json,
                    quiet: false,
                    run_id: None,
                },
                None,
            )
            .await
            .and_then(|summary| {
                inventory_cmd::after_resume(&config, &run_id, &summary);
                summary.outcome.map(drop)
            })
            .map_err(|e| given.explain(e))
        }
        Command::Runs => state_cmds::runs(&load_config()?, json),
        Command::Unlock { credential, yes } => {
            state_cmds::unlock(&load_config()?, &credential, yes)
        }
        Command::Pending => state_cmds::pending(&load_config()?, json),
        Command::Approvals { all } => approvals::list(&load_config()?, all, json),
        Command::Approve { request, comment } => {
            approvals::decide(&load_config()?, &request, true, comment.as_deref())
        }
        Command::Reject { request, reason } => {
            approvals::decide(&load_config()?, &request, false, Some(&reason))
        }
        Command::Abandon {
            run_id,
            reason,
            yes,
        } => state_cmds::abandon(&load_config()?, &run_id, &reason, yes),
        Command::Retry { action_id } => state_cmds::retry(&load_config()?, &action_id),
        Command::Cleanup => state_cmds::cleanup(&load_config()?, json).await,
        Command::Rotate(args) => {
            inventory_cmd::rotate(
                load_config()?,
                inventory_cmd::RotateArgs {
                    selection: inventory_cmd::Selection {
                        ids: args.ids,
                        team: args.team,
                    },
                    due: args.due,
                    concurrency: args.concurrency,
                    dry_run: args.dry_run,
                    json,
                },
            )
            .await
        }
        Command::Exporter {
            listen,
            interval,
            concurrency,
        } => {
            inventory_cmd::exporter(
                load_config()?,
                inventory_cmd::ExporterArgs {
                    listen,
                    interval,
                    concurrency,
                },
            )
            .await
        }
        Command::Discover {
            plugin,
            env,
            projects,
            groups,
            all,
            toml,
        } => {
            inventory_cmd::discover(
                &load_config()?,
                inventory_cmd::DiscoverArgs {
                    plugin,
                    env,
                    projects,
                    groups,
                    all,
                    toml,
                    json,
                },
            )
            .await
        }
        Command::Check(args) => {
            inventory_cmd::check(
                &load_config()?,
                inventory_cmd::CheckArgs {
                    selection: inventory_cmd::Selection {
                        ids: args.ids,
                        team: args.team,
                    },
                    concurrency: args.concurrency,
                    prometheus: args.prometheus,
                    json,
                },
            )
            .await
        }
        Command::History {
            credential,
            limit,
            since,
            state,
        } => state_cmds::history(
            &load_config()?,
            &state_cmds::HistoryQuery {
                credential: credential.as_deref(),
                limit,
                since,
                states: state,
            },
            json,
        ),
        Command::Show { run_id } => state_cmds::show(&load_config()?, &run_id, json),
        Command::Plugins(PluginsCommand::List) => plugins_cmd::list(&load_config()?, json).await,
        Command::Plugins(PluginsCommand::Inspect { name, env }) => {
            plugins_cmd::inspect(&load_config()?, &name, env.as_deref(), json).await
        }
        Command::Plugins(PluginsCommand::New { name, lang, dir }) => {
            new_plugin::new_plugin(&name, lang, dir.as_deref(), json)
        }
        Command::Plugins(PluginsCommand::Check { file }) => plugins_cmd::check(&file, json).await,
        Command::Plugins(PluginsCommand::Hash { file }) => plugins_cmd::hash(&file, json),
        Command::Plugins(PluginsCommand::Keygen { out }) => plugins_cmd::keygen(&out, json),
        Command::Plugins(PluginsCommand::Sign { file, key }) => {
            plugins_cmd::sign(&file, &key, json)
        }
        Command::Plugins(PluginsCommand::Verify { file, key }) => {
            plugins_cmd::verify(&file, &key, json)
        }
        Command::Secrets(cmd) => {
            let config = load_config()?;
            match cmd {
                SecretsCommand::Init => secrets_cmd::init(&config),
                SecretsCommand::Set {
                    name,
                    from_file,
                    from_env,
                } => secrets_cmd::set(&config, &name, from_file.as_deref(), from_env.as_deref()),
                SecretsCommand::List => secrets_cmd::list(&config, json),
                SecretsCommand::Rm { name } => secrets_cmd::rm(&config, &name),
            }
        }
        Command::Sim(args) => sim_cmd::serve(args.provider, args.port, args.tls).await,
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command(), "keycycle", &mut out);
            out!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }
        Command::Man { dir } => man_pages(&dir),
        Command::Doctor => doctor::doctor(cli.config.as_deref(), json).await,
    }
}

/// The command-line definition, with the exit-code table (kept in
/// `exit.rs`, the one source of truth) as the closing help text.
fn command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command().after_help(exit::help_table())
}

/// Writes a man page for keycycle and one for each subcommand into `dir`
/// (`cargo xtask man` calls this).
fn man_pages(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
        .context(Code::Config)?;
    let mut written = 0;
    let root = command();
    let mut pending = vec![(String::from("keycycle"), root)];
    while let Some((name, cmd)) = pending.pop() {
        if cmd.is_hide_set() {
            continue;
        }
        for sub in cmd.get_subcommands() {
            pending.push((
                format!("{name}-{}", sub.get_name()),
                sub.clone().name(format!("{name}-{}", sub.get_name())),
            ));
        }
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
    }
    note!("wrote {written} man pages to {}", dir.display());
    Ok(())
}

/// The system allocator, counted: [`heap_in_use`] bounds what a runbook
/// builds (see `keycycle_runbook::Limits::max_memory_bytes`).
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Bytes of heap the process has allocated and not freed.
pub fn heap_in_use() -> usize {
    ALLOCATOR.allocated()
}

fn main() -> ExitCode {
    // Before anything else, and before any thread exists.
    hardening::apply();
    use clap::FromArgMatches;
    let cli = match Cli::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let verbosity = (cli.verbose as i8).saturating_sub(cli.quiet as i8);
    out::set_verbosity(verbosity);
    out::set_json(cli.output == Output::Json);
    logging::init(verbosity, cli.color, cli.log_format);
    let json = cli.output == Output::Json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Code::Internal.exit_code());
        }
    };
    // A panic is a bug, but still an internal error to a script (exit 1),
    // not Rust's 101; the hook has already printed it, masked.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(dispatch(cli))
    }))
    .unwrap_or_else(|_| Err(anyhow::anyhow!("keycycle stopped on a bug (see above)")));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit::code_of(&err);
            let causes = exit::causes(&err);
            let mut text = String::new();
            for (i, cause) in causes.iter().enumerate() {
                let head = if i == 0 { "error" } else { "  caused by" };
                text.push_str(&format!("{head}: {cause}\n"));
            }
            if text.is_empty() {
                text = format!("error: {code}\n");
            }
            err!("{text}");
            // A JSON reader gets the error as JSON too, unless the command
            // already printed its own report (a run's, say).
            if json && !out::stdout_used() {
                let message = causes.first().cloned().unwrap_or_else(|| code.to_string());
                let doc = serde_json::json!({
                    "ok": false,
                    "error": {
                        "kind": code.word(),
                        "exit_code": code.exit_code(),
                        "message": message,
                        "causes": causes.get(1..).unwrap_or_default(),
                    }
                });
                outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            ExitCode::from(code.exit_code())
        }
    }
}
