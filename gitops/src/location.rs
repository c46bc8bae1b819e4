//! Where a source's URL points, and whether a control plane serving many
//! organisations may fetch from there.
//!
//! A URL is parsed the way libgit2 picks its transport (a known
//! `scheme://`, else `[user@]host:path` when there is a `:`, else a local
//! path), but strictly: anything libgit2 could read differently (percent
//! signs or brackets in a host name, several `@`, upper-case schemes,
//! backslashes) is refused rather than guessed at. A remote host is then
//! resolved and every address it resolves to must be public.
//!
//! [`SourcePolicy::check`] resolves host names: it blocks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

/// What the operator of the control plane allows sources to point at.
/// The default allows neither local paths nor private addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourcePolicy {
    /// Local paths and `file://` URLs: whoever adds a source can then read
    /// every repository the control plane's OS user can read.
    pub allow_local: bool,
    /// Hosts resolving to loopback, private, link-local, shared (CGNAT),
    /// multicast or otherwise non-public addresses.
    pub allow_private: bool,
    /// Whether fetches may authenticate with the control plane's own
    /// credentials (its ssh agent, its Kerberos/NTLM identity): whoever adds
    /// a source could then read every repository those reach.
    pub allow_server_credentials: bool,
}

/// Where a URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on the control plane's machine (`/srv/repo.git`, `file://…`).
    Local,
    /// A host reached over the network.
    Remote {
        /// `https`, `http`, `ssh` or `git`.
        scheme: &'static str,
        /// A name or an address (IPv6 without brackets).
        host: String,
        port: u16,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// The URL cannot be read unambiguously.
    #[error("{0}")]
    Invalid(String),
    #[error("local paths and file:// URLs are not allowed on this server; use an https:// or ssh:// URL")]
    LocalNotAllowed,
    /// The host does not resolve, or resolves to a non-public address.
    /// `detail` says which, for the server's log: both cases read the same
    /// to whoever added the source, so that it cannot learn which internal
    /// names exist.
    #[error("host {host:?} does not resolve to a public address; this server only fetches from public hosts")]
    NotPublic { host: String, detail: String },
}

impl SourcePolicy {
    /// Everything allowed: a single-user control plane on its user's machine.
    pub fn allow_all() -> SourcePolicy {
        SourcePolicy {
            allow_local: true,
            allow_private: true,
            allow_server_credentials: true,
        }
    }

    /// Parses `url` and checks it against the policy, resolving a remote
    /// host unless private addresses are allowed. Blocks on DNS.
    pub fn check(&self, url: &str) -> Result<Location, LocationError> {
        let location = parse_location(url)?;
        match &location {
            Location::Local if !self.allow_local => return Err(LocationError::LocalNotAllowed),
            Location::Local => {}
            Location::Remote { host, port, .. } if !self.allow_private => {
                check_public(host, *port)?
            }
            Location::Remote { .. } => {}
        }
        Ok(location)
    }
}

const REMOTE_SCHEMES: [(&str, &str, u16); 6] = [
    ("https", "https", 443),
    ("http", "http", 80),
    ("ssh", "ssh", 22),
    ("ssh+git", "ssh", 22),
    ("git+ssh", "ssh", 22),
    ("git", "git", 9418),
];

/// Reads `url` as libgit2 would choose its transport, refusing what is
/// ambiguous.
pub fn parse_location(url: &str) -> Result<Location, LocationError> {
    let invalid = |m: &str| Err(LocationError::Invalid(m.to_owned()));
    if url.trim().is_empty() {
        return invalid("a git URL or path is required");
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return invalid("must not contain whitespace, control characters or backslashes");
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if is_scheme(scheme) {
            return parse_url(scheme, rest);
        }
    }
    match url.split_once(':') {
        // libgit2 reads any other string with a ':' as `[user@]host:path`.
        Some((user_host, _path)) => parse_scp(user_host),
        None => Ok(Location::Local),
    }
}

fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

fn parse_url(scheme: &str, rest: &str) -> Result<Location, LocationError> {
    if scheme == "file" {
        return Ok(Location::Local);
    }
    let Some(&(_, canonical, default_port)) = REMOTE_SCHEMES.iter().find(|(s, ..)| *s == scheme)
    else {
        return Err(LocationError::Invalid(format!(
            "unsupported URL scheme {scheme:?}; use https://, http://, ssh://, git:// or user@host:path (lower case)"
        )));
    };
    // libgit2 ends the authority at the first '/' and splits off the user
    // at the last '@'.
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains(['?', '#']) {
        return Err(LocationError::Invalid(
            "'?' and '#' may not come before the path".to_owned(),
        ));
    }
    let host_port = match authority.rsplit_once('@') {
        Some((user, _)) if user.contains('@') => {
            return Err(LocationError::Invalid(
                "more than one '@' before the host".to_owned(),
            ))
        }
        Some((_, host_port)) => host_port,
        None => authority,
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((inner, after)) = bracketed.split_once(']') else {
            return Err(LocationError::Invalid("unclosed '[' in the host".into()));
        };
        if inner.parse::<Ipv6Addr>().is_err() {
            return Err(LocationError::Invalid(format!(
                "{inner:?} in brackets is not an IPv6 address"
            )));
        }
        let port =
            match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| {
                    LocationError::Invalid("unexpected characters after ']'".into())
                })?),
            };
        (inner, port)
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if !host.contains(':') {
        check_host_name(host)?;
    }
    let port = match port {
        None | Some("") => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(LocationError::Invalid(format!("invalid port {p:?}"))),
        },
    };
    Ok(Location::Remote {
        scheme: canonical,
        host: host.to_owned(),
        port,
    })
}

fn parse_scp(user_host: &str) -> Result<Location, LocationError> {
    if user_host.contains('/') {
        return Err(LocationError::Invalid(
            "a local path must not contain ':' (git reads it as [user@]host:path)".to_owned(),
        ));
    }
    let host = match user_host.split_once('@') {
        Some((user, host)) => {
            let plain = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
            if user.is_empty() || !user.chars().all(plain) {
                return Err(LocationError::Invalid(format!(
                    "{user_host:?} is read as user@host: the user may only hold letters, digits, '.', '_' and '-'"
                )));
            }
            host
        }
        None => user_host,
    };
    if host.starts_with('[') {
        return Err(LocationError::Invalid(
            "write an IPv6 address or a port as ssh://user@[address]:port/path".into(),
        ));
    }
    check_host_name(host).map_err(|_| {
        LocationError::Invalid(format!(
            "{user_host:?} is read as [user@]host:path (git's scp-like syntax) and {host:?} is not a host name; a local path must not contain ':'"
        ))
    })?;
    Ok(Location::Remote {
        scheme: "ssh",
        host: host.to_owned(),
        port: 22,
    })
}

fn check_host_name(host: &str) -> Result<(), LocationError> {
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(LocationError::Invalid(format!(
            "{host:?} is not a host name (letters, digits, '.', '-', '_') or a bracketed IPv6 address"
        )))
    }
}

/// Resolves `host` and requires every address to be public.
fn check_public(host: &str, port: u16) -> Result<(), LocationError> {
    let not_public = |detail: String| LocationError::NotPublic {
        host: host.to_owned(),
        detail,
    };
    let addrs: Vec<IpAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| not_public(format!("does not resolve: {e}")))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() {
        return Err(not_public("resolves to no address".into()));
    }
    for ip in addrs {
        if let Some(kind) = non_public(ip) {
            return Err(not_public(format!("resolves to {ip} ({kind})")));
        }
    }
    Ok(())
}

/// What kind of non-public address `ip` is, or `None` when it is a public
/// unicast address.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

const V4_RANGES: [(u32, u32, &str); 15] = [
    (0x0000_0000, 8, "this network"),
    (0x0A00_0000, 8, "private"),
    (0x6440_0000, 10, "shared address space (CGNAT)"),
    (0x7F00_0000, 8, "loopback"),
    (0xA9FE_0000, 16, "link-local"),
    (0xAC10_0000, 12, "private"),
    (0xC000_0000, 24, "IETF protocol assignment"),
    (0xC000_0200, 24, "documentation"),
    (0xC058_6300, 24, "6to4 relay anycast"),
    (0xC0A8_0000, 16, "private"),
    (0xC612_0000, 15, "benchmarking"),
    (0xC633_6400, 24, "documentation"),
    (0xCB00_7100, 24, "documentation"),
    (0xE000_0000, 4, "multicast"),
    (0xF000_0000, 4, "reserved"),
];

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|(base, len, _)| bits >> (32 - len) == base >> (32 - len))
        .map(|(_, _, kind)| *kind)
}

const V6_RANGES: [(u128, u32, &str); 10] = [
    (0, 96, "IPv4-compatible"),
    (0x0064_ff9b_0001 << 80, 48, "local-use NAT64"),
    (0x0100 << 112, 64, "discard-only"),
    (0x2001 << 112, 23, "IETF protocol assignment"),
    (0x2001_0db8 << 96, 32, "documentation"),
    (0x3fff << 112, 20, "documentation"),
    (0xfc00 << 112, 7, "unique local"),
    (0xfe80 << 112, 10, "link-local"),
    (0xfec0 << 112, 10, "site-local"),
    (0xff00 << 112, 8, "multicast"),
];

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let bits = u128::from(ip);
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address that
    // a gateway forwards to: judge that one.
    if bits >> 32 == 0x0064_ff9b << 64 {
        return non_public_v4(Ipv4Addr::from(bits as u32));
    }
    if bits >> 112 == 0x2002 {
        return non_public_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    V6_RANGES
        .iter()
        .find(|(base, len, _)| bits >> (128 - len) == base >> (128 - len))
        .map(|(_, _, kind)| *kind)
}
