//! Outbound HTTP for plugins, made by the host. Every URL and every redirect
//! hop must be a granted origin, userinfo is refused, and names that resolve
//! to loopback, private, link-local or otherwise non-public addresses are
//! refused. The only way to a non-public address is a granted IP-literal
//! origin (`http://10.0.0.5:8200`), which is never resolved: the grant
//! covers that scheme, address and port, and nothing else. Responses are
//! size-capped.

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

/// Headers that carry credentials by name; dropped when a redirect changes
/// origin.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "private-token",
    "job-token",
    "deploy-token",
];

/// A header whose name contains one of these is taken for a credential too
/// (`X-Api-Key`, `X-Auth-Token`, `X-Vault-Token`, `Ocp-Apim-Subscription-Key`,
/// `X-Amz-Security-Token`, `X-CSRF-Token`, `Session-Id`...). Over-matching
/// costs a header on the rare redirect between origins; under-matching
/// sends a credential to the wrong server.
const CREDENTIAL_NAME_PARTS: &[&str] = &[
    "auth",
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "cookie",
    "session",
    "credential",
    "signature",
    "csrf",
    "xsrf",
];

/// Whether a header may carry a credential: by its name, or because its
/// value holds a secret value the process knows (any `SecretValue`: the
/// secrets the plugin read, the secrets passed to it, the values minted so
/// far), as written or escaped.
fn is_credential(name: &HeaderName, value: &HeaderValue) -> bool {
    let name = name.as_str();
    if CREDENTIAL_HEADERS.contains(&name) || CREDENTIAL_NAME_PARTS.iter().any(|p| name.contains(p))
    {
        return true;
    }
    let value = String::from_utf8_lossy(value.as_bytes());
    matches!(keycycle_secret::redact(&value), std::borrow::Cow::Owned(_))
}

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
        // No exemptions: a granted IP literal is connected to without the
        // resolver, so a name never inherits the right to reach it.
        let resolver = FilteringResolver;
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                format!(
                    "the configured ca_cert is not PEM ({e}); point ca_cert at the provider's \
                         CA certificate in PEM form (-----BEGIN CERTIFICATE-----)"
                )
            })?;
            if roots.is_empty() {
                return Err(
                    "the configured ca_cert holds no certificate; point ca_cert at the provider's \
                     CA certificate in PEM form (-----BEGIN CERTIFICATE-----), such as a \
                     cluster's certificate-authority-data decoded"
                        .to_owned(),
                );
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
                let cross_origin = Origin::of(&next) != Origin::of(&url);
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
                if cross_origin {
                    // A body is what the plugin meant for the first origin
                    // (a new token, a variable's value): it is never sent
                    // to another one. Sending the request without it would
                    // change what the request does, so it is refused. (An
                    // ungranted target is refused as such at the next hop.)
                    if !body.is_empty() && self.check(&next).is_ok() {
                        return Err(Failure::Denied(format!(
                            "redirect ({code}) from {} to {} would send the request body to \
                             another origin; refused",
                            Origin::of(&url).map_or_else(String::new, |o| o.to_string()),
                            redacted_url(&next),
                        )));
                    }
                    let names: Vec<HeaderName> = headers
                        .iter()
                        .filter(|(k, v)| is_credential(k, v))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for name in names {
                        headers.remove(name);
                    }
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

/// Resolves names, then drops addresses the plugin may not reach. It sees
/// only names: reqwest connects to an IP-literal URL without resolving it,
/// and such a URL gets here only when its whole origin was granted.
struct FilteringResolver;

#[derive(Debug)]
struct BlockedAddress {
    host: String,
    addr: IpAddr,
}

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host {} resolves to the non-public address {}, which a name may not reach (grant the address itself, as the origin scheme://address:port, and use it in the URL)",
            self.host, self.addr
        )
    }
}

impl StdError for BlockedAddress {}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            match reachable(addrs) {
                Ok(allowed) => Ok(Box::new(allowed.into_iter()) as Addrs),
                Err(addr) => {
                    Err(Box::new(BlockedAddress { host, addr }) as Box<dyn StdError + Send + Sync>)
                }
            }
        })
    }
}

/// The resolver's rule: of a name's addresses, those a plugin may reach
/// (public ones only; a granted IP literal is never resolved, so granting
/// one does not open its address to names). When every address is refused,
/// the first refused one, so the error can name it.
pub(crate) fn reachable(
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, IpAddr> {
    let mut allowed = Vec::new();
    let mut blocked = None;
    for addr in addrs {
        if is_public(addr.ip()) {
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
                 which plugins may reach only through a granted IP-literal origin; use the \
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
pub(crate) async fn check_origin(origin: &Origin) -> Option<HostProblem> {
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
        Ok(Ok(addrs)) => match reachable(addrs) {
            Ok(allowed) if allowed.is_empty() => unresolved("it has no addresses".to_owned()),
            Ok(_) => None,
            Err(addr) => Some(HostProblem::Refused { host, addr }),
        },
    }
}

/// IPv4 ranges no plugin may reach through a name, with what they are.
/// Sources: the IANA IPv4 Special-Purpose Address Registry (RFC 6890 and
/// its updates) and RFC 5771 (multicast).
const V4_BLOCKED: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "this-network"),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "shared (carrier-grade NAT)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "IETF protocol assignment"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 88, 99, 0], 24, "6to4 relay"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    // Includes 255.255.255.255, the limited broadcast address.
    ([240, 0, 0, 0], 4, "reserved"),
];

/// IPv6 ranges no plugin may reach through a name. IPv4-mapped addresses
/// (`::ffff:0:0/96`) are judged by the IPv4 address they carry, before this
/// list; every other address that embeds or translates to an IPv4 address
/// (IPv4-compatible, NAT64, 6to4, Teredo) is refused outright, because the
/// IPv4 address it reaches may be a private one. Sources: the IANA IPv6
/// Special-Purpose Address Registry and RFC 4291.
const V6_BLOCKED: &[([u16; 8], u8, &str)] = &[
    ([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
    ([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"),
    ([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible"),
    ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "NAT64"),
    ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "NAT64 (local-use)"),
    // The rest of ::/8 is reserved by the IETF (IPv4-translated
    // `::ffff:0:0:0/96` among it).
    ([0, 0, 0, 0, 0, 0, 0, 0], 8, "reserved"),
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo"),
    ([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "benchmarking"),
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
    ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4"),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "private (unique-local)"),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local"),
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
];

/// What kind of non-public address `ip` is, or `None` for a public one.
fn blocked_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let ip = u32::from(v4);
            V4_BLOCKED.iter().find_map(|(net, len, kind)| {
                let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                (ip & mask == u32::from_be_bytes(*net) & mask).then_some(*kind)
            })
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return blocked_kind(IpAddr::V4(v4));
            }
            let ip = u128::from(v6);
            V6_BLOCKED.iter().find_map(|(net, len, kind)| {
                let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                let net = u128::from(std::net::Ipv6Addr::from(*net));
                (ip & mask == net & mask).then_some(*kind)
            })
        }
    }
}

/// The kind of non-public address, for messages.
fn address_kind(ip: IpAddr) -> &'static str {
    blocked_kind(ip).unwrap_or("non-public")
}

/// False for the addresses a plugin could use to reach the runner's own
/// network or anything but a public unicast host: loopback, private,
/// link-local, shared, multicast, reserved and documentation ranges, and
/// IPv6 forms that carry or translate to an IPv4 address (an IPv4-mapped
/// address is judged by the address it carries).
pub(crate) fn is_public(ip: IpAddr) -> bool {
    blocked_kind(ip).is_none()
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
    fn the_special_purpose_ranges_are_not_public() {
        for (ip, kind) in [
            // NAT64, well-known and local-use prefixes, here translating
            // to 127.0.0.1 and 10.0.0.1 and to a public address alike.
            ("64:ff9b::7f00:1", "NAT64"),
            ("64:ff9b::808:808", "NAT64"),
            ("64:ff9b:1::a00:1", "NAT64 (local-use)"),
            ("64:ff9b:1:ffff::1", "NAT64 (local-use)"),
            // IPv4-compatible (deprecated) and IPv4-translated forms.
            ("::7f00:1", "IPv4-compatible"),
            ("::a9fe:a9fe", "IPv4-compatible"),
            ("::ffff:0:7f00:1", "reserved"),
            // Next to the NAT64 prefixes, but still in the reserved ::/8.
            ("64:ff9b:2::1", "reserved"),
            // 6to4 of 127.0.0.1 and of 169.254.169.254, and Teredo.
            ("2002:7f00:1::1", "6to4"),
            ("2002:a9fe:a9fe::", "6to4"),
            ("2001:0:4136:e378::1", "Teredo"),
            ("fec0::1", "site-local"),
            ("feff::1", "site-local"),
            ("ff02::1", "multicast"),
            ("ff05::1:3", "multicast"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.254", "benchmarking"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("192.0.0.170", "IETF protocol assignment"),
            ("100::1", "discard-only"),
            ("2001:db8::1", "documentation"),
            // IPv4-mapped addresses carry the kind of their IPv4 address.
            ("::ffff:198.18.0.1", "benchmarking"),
            ("::ffff:224.0.0.1", "multicast"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0.0.0.0", "this-network"),
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert!(!is_public(addr), "{ip}");
            assert_eq!(address_kind(addr), kind, "{ip}");
        }
        // The neighbours of each range stay public.
        for ip in [
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "2003::1",
            "2001:4860:4860::8888",
            "fbff::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn reachable_keeps_only_public_addresses() {
        let addr = |s: &str| SocketAddr::new(s.parse().unwrap(), 443);
        assert_eq!(
            reachable([addr("127.0.0.1"), addr("::1")]),
            Err("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            reachable([addr("10.0.0.1"), addr("8.8.8.8")]),
            Ok(vec![addr("8.8.8.8")])
        );
        assert_eq!(
            reachable([addr("64:ff9b::a00:1"), addr("2002:a00:1::1")]),
            Err("64:ff9b::a00:1".parse().unwrap())
        );
    }
}
