//! keycycle's integration tests, as one test binary (the layout wasmtime and
//! rust-analyzer use): every module drives the real `keycycle` binary on real
//! compiled plugins, and they share one harness, linked once.

// Not every test module uses every helper of the harness.
#[allow(dead_code)]
mod support;

mod approvals;
mod canary;
mod cli;
mod config;
mod crash;
mod deploy;
mod doctor;
mod durable;
mod github;
mod gitlab;
mod hostile_runbooks;
mod ibm_sm;
mod inputs;
mod interpreted;
mod inventory;
mod js_plugin;
mod kubernetes;
mod openbao;
mod operator;
mod plugin_check;
mod plugin_files;
mod plugin_new;
mod plugin_sdk;
mod postgres;
mod python_gitlab;
mod python_kubernetes;
mod python_plugin;
mod retries;
mod runbooks;
mod runners;
mod sandbox;
mod secrets;
mod seed000;
mod seed001;
mod signon;
mod tenancy;
mod zendesk;
mod zendesk_crash;
