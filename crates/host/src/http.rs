//! Outbound HTTP for plugins, made by the host. Every URL and every redirect
//! hop must be a granted origin, userinfo is refused, and names that resolve
//! to loopback, private or link-local addresses are refused unless that
//! address itself was granted. Responses are size-capped.

use std::collections::BTreeSet;
use std::error::Error as StdError;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::grants::{Effective, Origin};
use crate::text::echo;

const MAX_REDIRECTS: usize = 5;

/// Headers that would change where or how the host connects. Spin's
/// GHSA-f3h7-gpjj-wcvh shows why a plugin must not set `Host`.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "proxy-authorization",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "keep-alive",
];

/// Headers that carry credentials; dropped when a redirect changes origin.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "private-token", "cookie", "job-token"];

pub(crate) struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub(crate) enum Failure {
    Denied(String),
    Timeout(String),
    Transport(String),
    TooLarge(String),
}

/// The network side of one plugin: its policy and its client.
pub(crate) struct PluginHttp {
    origins: BTreeSet<Origin>,
    client: reqwest::Client,
}

impl PluginHttp {
    pub fn new(
        eff: &Effective,
        timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<PluginHttp, String> {
        let resolver = FilteringResolver {
            explicit: Arc::new(eff.explicit_ips()),
        };
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| format!("the configured ca_cert is not PEM: {e}"))?;
            if roots.is_empty() {
                return Err("the configured ca_cert holds no certificate".to_owned());
            }
            // Only the configured CA: a cluster's API server must not be
            // impersonated by anyone a public CA would vouch for.
            builder = builder.tls_built_in_root_certs(false);
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        let client = builder
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself and defeat the address check.
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("keycycle/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(PluginHttp {
            origins: eff.origins.clone(),
            client,
        })
    }

    /// Checks one URL against the grants; the error says what was refused.
    pub fn check(&self, url: &Url) -> Result<(), String> {
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "URL with userinfo refused ({}://…@{})",
                url.scheme(),
                url.host_str().unwrap_or("")
            ));
        }
        let Some(origin) = Origin::of(url) else {
            return Err(format!("scheme `{}` is not allowed", url.scheme()));
        };
        if self.origins.contains(&origin) {
            Ok(())
        } else {
            Err(format!("host {origin} is not granted"))
        }
    }

    /// Sends a request, following redirects only through granted origins.
    /// `budget` counts requests, hops included.
    pub async fn send(
        &self,
        req: Request,
        max_body: usize,
        budget: &mut usize,
    ) -> Result<Response, Failure> {
        let mut url = Url::parse(&req.url).map_err(|e| {
            Failure::Denied(format!("`{}` is not a valid URL: {e}", echo(&req.url)))
        })?;
        let mut method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                Failure::Denied(format!("HTTP method `{}` is not valid", echo(&req.method)))
            })?;
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            let lower = k.to_ascii_lowercase();
            if FORBIDDEN_HEADERS.contains(&lower.as_str()) {
                return Err(Failure::Denied(format!(
                    "header `{}` may not be set by a plugin",
                    echo(k)
                )));
            }
            let name = HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| Failure::Transport(format!("invalid header name `{}`", echo(k))))?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                Failure::Transport(format!("invalid value for header `{}`", echo(k)))
            })?;
            headers.append(name, value);
        }
        let mut body = req.body;

        for hop in 0..=MAX_REDIRECTS {
            self.check(&url).map_err(|what| {
                if hop == 0 {
                    Failure::Denied(what)
                } else {
                    Failure::Denied(format!("redirect to {}: {what}", redacted_url(&url)))
                }
            })?;
            if *budget == 0 {
                return Err(Failure::Denied(
                    "the call's HTTP request limit is used up".into(),
                ));
            }
            *budget -= 1;

            let mut builder = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if !body.is_empty() {
                builder = builder.body(body.clone());
            }
            let resp = builder.send().await.map_err(classify)?;
            let status = resp.status();
            if status.is_redirection()
                && let Some(location) = resp.headers().get(reqwest::header::LOCATION)
            {
                let location = location
                    .to_str()
                    .map_err(|_| Failure::Transport("redirect Location is not text".into()))?;
                let next = url
                    .join(location)
                    .map_err(|e| Failure::Transport(format!("bad redirect Location: {e}")))?;
                if Origin::of(&next) != Origin::of(&url) {
                    for h in CREDENTIAL_HEADERS {
                        headers.remove(*h);
                    }
                }
                // RFC 9110 §15.4: 303 always becomes GET; 301/302 do for POST
                // in every client that matters. 307/308 keep method and body.
                let code = status.as_u16();
                if code == 303 || ((code == 301 || code == 302) && method == reqwest::Method::POST)
                {
                    method = reqwest::Method::GET;
                    body.clear();
                    headers.remove(reqwest::header::CONTENT_TYPE);
                    headers.remove(reqwest::header::CONTENT_LENGTH);
                }
                url = next;
                continue;
            }
            return read_response(resp, max_body).await;
        }
        Err(Failure::Transport(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }
}

async fn read_response(mut resp: reqwest::Response, max_body: usize) -> Result<Response, Failure> {
    if resp.content_length().is_some_and(|n| n > max_body as u64) {
        return Err(Failure::TooLarge(format!(
            "response of {} bytes is over the {max_body}-byte limit",
            resp.content_length().unwrap_or(0)
        )));
    }
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > max_body {
            return Err(Failure::TooLarge(format!(
                "response body is over the {max_body}-byte limit"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Errors for people: the URL without its query, which may carry tokens.
fn redacted_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

fn classify(err: reqwest::Error) -> Failure {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(blocked) = e.downcast_ref::<BlockedAddress>() {
            return Failure::Denied(blocked.to_string());
        }
        source = e.source();
    }
    let mut detail = Vec::new();
    let mut source = err.source();
    while let Some(e) = source {
        detail.push(e.to_string());
        source = e.source();
    }
    let is_timeout = err.is_timeout();
    let text = err.without_url().to_string();
    let text = if detail.is_empty() {
        text
    } else {
        format!("{text}: {}", detail.join(": "))
    };
    // Errors from a malformed answer can quote what the server sent.
    let text = crate::text::bounded(&text, crate::text::MESSAGE_CHARS);
    if is_timeout {
        Failure::Timeout(text)
    } else {
        Failure::Transport(text)
    }
}

/// Resolves names, then drops addresses the plugin may not reach.
struct FilteringResolver {
    explicit: Arc<BTreeSet<IpAddr>>,
}

#[derive(Debug)]
struct BlockedAddress {
    host: String,
    addr: IpAddr,
}

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {} resolves to the non-public address {}, which is not granted (grant its address explicitly to allow it)",
            self.host, self.addr
        )
    }
}

impl StdError for BlockedAddress {}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let explicit = self.explicit.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            match reachable(addrs, &explicit) {
                Ok(allowed) => Ok(Box::new(allowed.into_iter()) as Addrs),
                Err(addr) => {
                    Err(Box::new(BlockedAddress { host, addr }) as Box<dyn StdError + Send + Sync>)
                }
            }
        })
    }
}

/// The resolver's rule: of a name's addresses, those a plugin may reach
/// (public ones, and non-public ones granted as IP literals). When every
/// address is refused, the first refused one, so the error can name it.
pub(crate) fn reachable(
    addrs: impl IntoIterator<Item = SocketAddr>,
    explicit: &BTreeSet<IpAddr>,
) -> Result<Vec<SocketAddr>, IpAddr> {
    let mut allowed = Vec::new();
    let mut blocked = None;
    for addr in addrs {
        if is_public(addr.ip()) || explicit.contains(&addr.ip()) {
            allowed.push(addr);
        } else {
            blocked.get_or_insert(addr.ip());
        }
    }
    match blocked {
        Some(addr) if allowed.is_empty() => Err(addr),
        _ => Ok(allowed),
    }
}

/// How long a grant check waits for one name to resolve.
const CHECK_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why calls to a granted origin will fail before they leave the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostProblem {
    /// Every address the name resolves to is one the resolver drops.
    Refused { host: String, addr: IpAddr },
    /// The name does not resolve from this machine (now).
    Unresolved { host: String, reason: String },
}

impl fmt::Display for HostProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostProblem::Refused { host, addr } => write!(
                f,
                "granted, but calls will be refused: {host} resolves to the {} address {addr}, \
                 which plugins may reach only when that address itself is granted; use the \
                 address in the grant (and in the plugin's config) instead of the name",
                address_kind(*addr)
            ),
            HostProblem::Unresolved { host, reason } => write!(
                f,
                "granted, but {host} does not resolve from this machine ({reason}); calls will \
                 fail until it does"
            ),
        }
    }
}

/// Whether calls to `origin` can get past the resolver, judged the way
/// [`FilteringResolver`] will judge them. IP literals are not resolved.
pub(crate) async fn check_origin(
    origin: &Origin,
    explicit: &BTreeSet<IpAddr>,
) -> Option<HostProblem> {
    if origin.ip().is_some() {
        return None;
    }
    let host = origin.host.clone();
    let unresolved = |reason: String| {
        Some(HostProblem::Unresolved {
            host: host.clone(),
            reason,
        })
    };
    let lookup = tokio::net::lookup_host((origin.host.as_str(), origin.port));
    match tokio::time::timeout(CHECK_RESOLVE_TIMEOUT, lookup).await {
        Err(_) => unresolved(format!(
            "no answer within {}s",
            CHECK_RESOLVE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => unresolved(e.to_string()),
        Ok(Ok(addrs)) => match reachable(addrs, explicit) {
            Ok(allowed) if allowed.is_empty() => unresolved("it has no addresses".to_owned()),
            Ok(_) => None,
            Err(addr) => Some(HostProblem::Refused { host, addr }),
        },
    }
}

/// The kind of non-public address, for messages.
fn address_kind(ip: IpAddr) -> &'static str {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_private() => "private",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local",
        IpAddr::V6(v6) if v6.is_loopback() => "loopback",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "private",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        _ => "non-public",
    }
}

/// False for loopback, private, link-local, shared, unique-local and
/// unspecified addresses: the ones a plugin could use to reach the runner's
/// own network.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        assert_eq!(address_kind("::ffff:10.0.0.1".parse().unwrap()), "private");
        assert_eq!(address_kind("::1".parse().unwrap()), "loopback");
        for ip in ["8.8.8.8", "140.82.112.3", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
    #[test]
    fn reachable_keeps_public_and_granted_addresses() {
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 443);
        let none = BTreeSet::new();
        assert_eq!(
            reachable([addr("127.0.0.1"), addr("::1")], &none),
            Err("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            reachable([addr("10.0.0.1"), addr("8.8.8.8")], &none),
            Ok(vec![addr("8.8.8.8")])
        );
        let granted = BTreeSet::from(["127.0.0.1".parse().unwrap()]);
        assert_eq!(
            reachable([addr("127.0.0.1"), addr("::1")], &granted),
            Ok(vec![addr("127.0.0.1")])
        );
    }
}
