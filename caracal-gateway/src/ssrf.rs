//! The egress (SSRF) guard (reference `gateway.md` §2.1, made stricter as issue #7 asks).
//!
//! Upstream URLs come from operator configuration via the STS, never from the client, but a
//! compromised or careless configuration must still not reach the metadata service or the
//! Gateway's own network. The rules:
//!
//! - scheme `http` or `https`, a non-empty host, no userinfo;
//! - when `UPSTREAM_ALLOW_HOSTS` is non-empty, the host must be one of them (exact, lowercase);
//! - every resolved address is judged, and one unsafe address refuses the URL:
//!   - **always refused**: unspecified (`0.0.0.0/8`, `::`), link-local (`169.254/16` incl. cloud
//!     metadata, `fe80::/10`), multicast (`224/4`, `ff00::/8`), broadcast;
//!   - **refused unless allowed**: loopback (`127/8`, `::1`), private (RFC 1918, `fc00::/7`),
//!     CGNAT (`100.64/10`). Allowed by `UPSTREAM_ALLOW_PRIVATE=true`, for a host named in
//!     `UPSTREAM_ALLOW_HOSTS`, or (loopback only) by `UPSTREAM_ALLOW_LOOPBACK=true`, the
//!     setting `caracal up` uses in dev mode so the demo upstream works;
//!   - NAT64 (`64:ff9b::/96`) and IPv4-mapped (`::ffff:0:0/96`) addresses are judged by the
//!     embedded IPv4 address.
//!
//! Resolution happens twice: [`EgressGuard::check`] before the request is built, and
//! [`GuardedResolver`] inside the connector at connect time, which re-resolves, re-judges
//! every address and hands the connector only checked addresses, so the address connected to
//! is always one that passed (no DNS rebinding between check and connect). IP literals are
//! not resolved by the connector; they were judged at check time and cannot rebind.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use hyper_util::client::legacy::connect::dns::Name;

/// How an address is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Never reachable through the Gateway.
    Forbidden,
    /// Loopback: needs `allow_private` or `allow_loopback` (or an allowlisted host).
    Loopback,
    /// Private or CGNAT: needs `allow_private` (or an allowlisted host).
    Private,
    /// Public.
    Public,
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let o = ip.octets();
    if o[0] == 0 || ip.is_link_local() || ip.is_multicast() || ip.is_broadcast() {
        AddressClass::Forbidden
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        AddressClass::Private
    } else {
        AddressClass::Public
    }
}

/// The class of `ip`.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            // NAT64 well-known prefix 64:ff9b::/96.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|x| *x == 0) {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return classify_v4(Ipv4Addr::new(a, b, c, d));
            }
            if v6.is_unspecified() || v6.is_multicast() || (s[0] & 0xffc0) == 0xfe80 {
                AddressClass::Forbidden
            } else if v6.is_loopback() {
                AddressClass::Loopback
            } else if (s[0] & 0xfe00) == 0xfc00 {
                AddressClass::Private
            } else {
                AddressClass::Public
            }
        }
    }
}

/// Name resolution (injected so rebinding is testable).
#[async_trait]
pub trait Lookup: Send + Sync {
    /// The addresses of `host`.
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The system resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

#[async_trait]
impl Lookup for SystemLookup {
    async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }
}

/// The egress policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// `UPSTREAM_ALLOW_PRIVATE`: loopback, private and CGNAT allowed for every host.
    pub allow_private: bool,
    /// `UPSTREAM_ALLOW_LOOPBACK`: loopback allowed for every host (dev).
    pub allow_loopback: bool,
    /// `UPSTREAM_ALLOW_HOSTS`: if non-empty, the only addressable hosts (lowercase); they may
    /// resolve to private addresses.
    pub allow_hosts: Vec<String>,
}

impl EgressPolicy {
    /// Whether `ip`, reached for `host`, is allowed.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        let listed = self.allow_hosts.iter().any(|h| h == host);
        match classify(ip) {
            AddressClass::Forbidden => false,
            AddressClass::Public => true,
            AddressClass::Loopback => self.allow_private || self.allow_loopback || listed,
            AddressClass::Private => self.allow_private || listed,
        }
    }

    /// Whether `host` passes the allowlist (empty list: every host).
    pub fn host_allowed(&self, host: &str) -> bool {
        self.allow_hosts.is_empty() || self.allow_hosts.iter().any(|h| h == host)
    }
}

/// The parts of a checked upstream URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: String,
    /// Lowercase host, without IPv6 brackets.
    pub host: String,
    /// Explicit port, if any.
    pub port: Option<u16>,
}

/// Why a URL is not addressable (logs only; the client sees "upstream not addressable").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// Does not parse, or has no host.
    #[error("upstream url does not parse")]
    Parse,
    /// Scheme other than http/https.
    #[error("upstream scheme not allowed")]
    Scheme,
    /// Userinfo present.
    #[error("upstream url carries userinfo")]
    Userinfo,
    /// Host not in the allowlist.
    #[error("upstream host not in allowlist")]
    NotListed,
    /// Resolution failed.
    #[error("upstream host does not resolve")]
    Resolve,
    /// A resolved address is refused.
    #[error("upstream address refused")]
    Address,
}

/// Parse and judge the URL's syntax (no resolution).
pub fn parse_target(url: &str) -> Result<Target, GuardError> {
    let uri: hyper::Uri = url.parse().map_err(|_| GuardError::Parse)?;
    let scheme = uri
        .scheme_str()
        .ok_or(GuardError::Parse)?
        .to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(GuardError::Scheme);
    }
    let authority = uri.authority().ok_or(GuardError::Parse)?;
    if authority.as_str().contains('@') {
        return Err(GuardError::Userinfo);
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(GuardError::Parse);
    }
    Ok(Target {
        scheme,
        host,
        port: authority.port_u16(),
    })
}

/// The check-time guard.
#[derive(Clone)]
pub struct EgressGuard {
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl std::fmt::Debug for EgressGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressGuard")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl EgressGuard {
    /// A guard for `policy` resolving with `lookup`.
    pub fn new(policy: EgressPolicy, lookup: Arc<dyn Lookup>) -> Self {
        Self {
            policy: Arc::new(policy),
            lookup,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// Judge `url` now: syntax, allowlist, then every resolved address.
    pub async fn check(&self, url: &str) -> Result<Target, GuardError> {
        let target = parse_target(url)?;
        if !self.policy.host_allowed(&target.host) {
            return Err(GuardError::NotListed);
        }
        let ips = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .lookup
                .lookup(&target.host)
                .await
                .map_err(|_| GuardError::Resolve)?,
        };
        if ips.iter().any(|ip| !self.policy.allows(&target.host, *ip)) {
            return Err(GuardError::Address);
        }
        Ok(target)
    }

    /// The connect-time resolver sharing this guard's policy and lookup.
    pub fn resolver(&self) -> GuardedResolver {
        GuardedResolver {
            policy: self.policy.clone(),
            lookup: self.lookup.clone(),
        }
    }
}

/// The connector's resolver: re-resolves and refuses if any address is unsafe (or none).
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    lookup: Arc<dyn Lookup>,
}

impl std::fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedResolver").finish_non_exhaustive()
    }
}

impl GuardedResolver {
    /// Resolve `host` and return only addresses that pass (all must pass).
    pub async fn resolve(&self, host: &str) -> std::io::Result<Vec<SocketAddr>> {
        let host = host.to_ascii_lowercase();
        if !self.policy.host_allowed(&host) {
            return Err(std::io::Error::other("egress: host not allowed"));
        }
        let ips = self.lookup.lookup(&host).await?;
        if ips.is_empty() {
            return Err(std::io::Error::other("egress: no addresses"));
        }
        if ips.iter().any(|ip| !self.policy.allows(&host, *ip)) {
            return Err(std::io::Error::other("egress: address refused at connect"));
        }
        Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect())
    }
}

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.resolve(name.as_str()).await.map(Vec::into_iter) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use super::*;

    struct Fixed(Mutex<Vec<Vec<IpAddr>>>);

    #[async_trait]
    impl Lookup for Fixed {
        async fn lookup(&self, _: &str) -> std::io::Result<Vec<IpAddr>> {
            let mut answers = self.0.lock().unwrap();
            if answers.len() > 1 {
                Ok(answers.remove(0))
            } else {
                Ok(answers[0].clone())
            }
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classes() {
        for a in [
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "fe80::1",
            "::",
            "ff02::1",
            "64:ff9b::a9fe:a9fe",
            "::ffff:169.254.169.254",
        ] {
            assert_eq!(classify(ip(a)), AddressClass::Forbidden, "{a}");
        }
        for a in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(classify(ip(a)), AddressClass::Loopback, "{a}");
        }
        for a in [
            "10.0.0.5",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "fd00::1",
            "64:ff9b::a00:1",
        ] {
            assert_eq!(classify(ip(a)), AddressClass::Private, "{a}");
        }
        for a in ["8.8.8.8", "100.128.0.1", "2606:4700::1"] {
            assert_eq!(classify(ip(a)), AddressClass::Public, "{a}");
        }
    }

    #[tokio::test]
    async fn check_rules() {
        let guard = |p: EgressPolicy| {
            EgressGuard::new(p, Arc::new(Fixed(Mutex::new(vec![vec![ip("10.1.2.3")]]))))
        };
        let strict = guard(EgressPolicy::default());
        assert_eq!(
            strict.check("http://169.254.169.254/").await,
            Err(GuardError::Address)
        );
        assert_eq!(
            strict.check("http://[64:ff9b::a9fe:a9fe]/").await,
            Err(GuardError::Address)
        );
        assert_eq!(
            strict.check("http://10.0.0.5/").await,
            Err(GuardError::Address)
        );
        assert_eq!(
            strict.check("http://127.0.0.1:9/").await,
            Err(GuardError::Address)
        );
        assert_eq!(
            strict.check("http://internal.example/").await,
            Err(GuardError::Address)
        );
        assert_eq!(
            strict.check("ftp://8.8.8.8/").await,
            Err(GuardError::Scheme)
        );
        assert_eq!(
            strict.check("http://u:p@8.8.8.8/").await,
            Err(GuardError::Userinfo)
        );
        assert!(strict.check("https://8.8.8.8/x").await.is_ok());
        let private = guard(EgressPolicy {
            allow_private: true,
            ..EgressPolicy::default()
        });
        assert!(private.check("http://10.0.0.5/").await.is_ok());
        assert!(private.check("http://127.0.0.1:9/").await.is_ok());
        assert_eq!(
            private.check("http://169.254.169.254/").await,
            Err(GuardError::Address)
        );
        let loopback = guard(EgressPolicy {
            allow_loopback: true,
            ..EgressPolicy::default()
        });
        assert!(loopback.check("http://127.0.0.1:9/").await.is_ok());
        assert_eq!(
            loopback.check("http://10.0.0.5/").await,
            Err(GuardError::Address)
        );
        let listed = guard(EgressPolicy {
            allow_hosts: vec!["internal.example".into()],
            ..EgressPolicy::default()
        });
        assert!(listed.check("http://internal.example/").await.is_ok());
        assert_eq!(
            listed.check("http://other.example/").await,
            Err(GuardError::NotListed)
        );
    }

    /// DNS rebinding: public at check time, metadata at connect time → refused at connect.
    #[tokio::test]
    async fn rebinding_is_refused_at_connect() {
        let lookup = Arc::new(Fixed(Mutex::new(vec![
            vec![ip("93.184.216.34")],
            vec![ip("169.254.169.254")],
        ])));
        let guard = EgressGuard::new(EgressPolicy::default(), lookup);
        assert!(guard.check("http://rebind.example/").await.is_ok());
        assert!(guard.resolver().resolve("rebind.example").await.is_err());
    }
}
