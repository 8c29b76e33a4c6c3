//! How a keyed layer takes a key from each request: a closure, or one of
//! the built-in sources ([`HostAndPort`], [`Header`]; feature `http`).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use crate::registry::Lookup;

/// Where a keyed layer's keys come from, and what they are.
///
/// Made by [`KeyedBuilder::key`](super::KeyedBuilder::key) from a closure,
/// or one of the built-in sources, [`HostAndPort`] and [`Header`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a source of keys",
    label = "no key source",
    note = "give the keyed layer its keys with `.key(|req| ...)`, `.key_source(HostAndPort)` or `.key_source(Header::new(...))` before `build()`"
)]
pub trait KeySource: Send + Sync + 'static {
    /// The key of an instance, as the registry keeps it. It displays as
    /// events, metrics and rejections name the instance.
    type Key: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static;
}

/// Takes a key from a `Req`.
pub trait KeyOf<Req>: KeySource {
    /// The key as found in the request: the key itself, or a borrowed form
    /// of it, so that finding an instance builds no owned key.
    type Lookup<'a>: Lookup<Self::Key>
    where
        Self: 'a,
        Req: 'a;

    /// The key of `req`.
    fn key_of<'a>(&'a self, req: &'a Req) -> Self::Lookup<'a>;
}

/// A key taken by a closure; made by [`KeyedBuilder::key`](super::KeyedBuilder::key).
pub struct KeyFn<F, Req, K> {
    f: F,
    // `fn(Req)`, not `fn(&Req)`: a higher-ranked type here makes futures
    // that hold the service fail `Send` checks (rustc #64552).
    _types: PhantomData<fn(Req) -> K>,
}

impl<F, Req, K> KeyFn<F, Req, K> {
    pub(crate) fn new(f: F) -> Self {
        Self {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, Req, K> fmt::Debug for KeyFn<F, Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFn")
            .field("key", &std::any::type_name::<K>())
            .finish()
    }
}

impl<F, Req, K> KeySource for KeyFn<F, Req, K>
where
    F: Fn(&Req) -> K + Send + Sync + 'static,
    Req: 'static,
    K: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static,
{
    type Key = K;
}

impl<F, Req, K> KeyOf<Req> for KeyFn<F, Req, K>
where
    F: Fn(&Req) -> K + Send + Sync + 'static,
    Req: 'static,
    K: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static,
{
    type Lookup<'a> = K;

    #[inline]
    fn key_of<'a>(&'a self, req: &'a Req) -> K {
        (self.f)(req)
    }
}

/// No key source yet: [`KeyedBuilder::build`](super::KeyedBuilder::build)
/// needs one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

/// A host and port: the key [`HostAndPort`] takes from a request. The host
/// is kept in lower case (host names are case-insensitive); it displays
/// as `host:port` (`[::1]:8080` for an IPv6 address).
#[derive(Clone, PartialEq, Eq)]
pub struct HostPort {
    host: Box<str>,
    port: u16,
}

impl HostPort {
    /// The key of `host` (any case) and `port`. An IPv6 address is written
    /// as a URI writes it, in brackets: `HostPort::new("[::1]", 8080)`.
    pub fn new(host: &str, port: u16) -> Self {
        Self {
            host: host.to_ascii_lowercase().into_boxed_str(),
            port,
        }
    }

    /// The host, in lower case; empty for a request that named none.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port: the URI's, or its scheme's default (80 for `http`, 443
    /// for `https`); 0 when neither says.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Hashes a host as lower case, byte by byte, then the port: the owned key
/// and a borrowed one hash alike.
fn hash_host_port<H: Hasher>(host: &str, port: u16, state: &mut H) {
    for byte in host.bytes() {
        state.write_u8(byte.to_ascii_lowercase());
    }
    state.write_u8(0xff);
    state.write_u16(port);
}

impl Hash for HostPort {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_host_port(&self.host, self.port, state);
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.is_empty() {
            return write!(f, "(no host):{}", self.port);
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl fmt::Debug for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostPort({self})")
    }
}

/// A request's host and port, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct HostPortRef<'a> {
    host: &'a str,
    port: u16,
}

impl Hash for HostPortRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_host_port(self.host, self.port, state);
    }
}

impl Lookup<HostPort> for HostPortRef<'_> {
    #[inline]
    fn matches(&self, key: &HostPort) -> bool {
        self.port == key.port && self.host.eq_ignore_ascii_case(&key.host)
    }

    fn to_key(&self) -> HostPort {
        HostPort::new(self.host, self.port)
    }
}

/// Keys requests by the host and port they go to: one instance per
/// upstream (a breaker per host, say, as .NET's standard handler keeps a
/// pipeline per authority). Feature `http`.
///
/// For an `http::Request`, the URI's host and port, the port defaulting
/// to the scheme's (80 for `http` and `ws`, 443 for `https` and `wss`);
/// for a request whose URI has no host (on a server, or inside a tonic
/// `Channel`), the `Host` header's host and port. A port nobody names (a
/// `Host: api.example` header on a request whose URI has no scheme, as a
/// server sees it) is 0: `api.example:0`. For a `reqwest::Request`
/// (feature `reqwest`), its URL's host and port. A request that names no
/// host has the key `(no host):0`, shared by all such requests. Finding the instance builds no owned key: the host is
/// compared in place, ignoring case.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostAndPort;

impl KeySource for HostAndPort {
    type Key = HostPort;
}

#[cfg(feature = "http")]
fn default_port(scheme: Option<&str>) -> u16 {
    match scheme {
        Some(s) if s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("wss") => 443,
        Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("ws") => 80,
        _ => 0,
    }
}

/// Splits a `Host` header's `host[:port]` (`[v6]:port` for IPv6).
#[cfg(feature = "http")]
fn split_host(value: &str) -> (&str, Option<u16>) {
    let (host, port) = match value.rfind(':') {
        // An IPv6 literal without a port ends with `]`.
        Some(colon) if !value[colon..].contains(']') => {
            (&value[..colon], Some(&value[colon + 1..]))
        }
        _ => (value, None),
    };
    (host, port.and_then(|p| p.parse().ok()))
}

#[cfg(feature = "http")]
impl<B> KeyOf<http::Request<B>> for HostAndPort {
    type Lookup<'a>
        = HostPortRef<'a>
    where
        B: 'a;

    #[inline]
    fn key_of<'a>(&'a self, req: &'a http::Request<B>) -> HostPortRef<'a> {
        let uri = req.uri();
        if let Some(host) = uri.host() {
            let port = uri
                .port_u16()
                .unwrap_or_else(|| default_port(uri.scheme_str()));
            return HostPortRef { host, port };
        }
        match req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            Some(value) => {
                let (host, port) = split_host(value);
                HostPortRef {
                    host,
                    port: port.unwrap_or_else(|| default_port(uri.scheme_str())),
                }
            }
            None => HostPortRef { host: "", port: 0 },
        }
    }
}

#[cfg(feature = "reqwest")]
impl KeyOf<reqwest::Request> for HostAndPort {
    type Lookup<'a> = HostPortRef<'a>;

    #[inline]
    fn key_of<'a>(&'a self, req: &'a reqwest::Request) -> HostPortRef<'a> {
        let url = req.url();
        HostPortRef {
            host: url.host_str().unwrap_or(""),
            port: url.port_or_known_default().unwrap_or(0),
        }
    }
}

/// Keys requests by the value of one header: one instance per tenant, per
/// API key, per client. Feature `http`.
///
/// Requests without the header share one key, which displays as
/// `(none)`; a value that is not text displays with its bytes escaped as
/// `<[u8]>::escape_ascii` writes them (`a\xffb`).
/// Finding the instance builds no owned key.
///
/// Mind who sets the header: on a server, a client can send any value, so
/// a key per value is a key per whatever a client makes up. The keyed
/// layer's [`max_keys`](super::KeyedBuilder::max_keys) bounds the memory
/// that costs; it cannot make the key trustworthy.
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct Header {
    name: http::HeaderName,
}

#[cfg(feature = "http")]
impl Header {
    /// Keys by the header `name`.
    pub fn new(name: http::HeaderName) -> Self {
        Self { name }
    }
}

/// A header's value, or its absence: the key [`Header`] takes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HeaderKey(Option<Box<[u8]>>);

impl HeaderKey {
    /// The key of a request whose header has this value (`None`: without
    /// the header).
    pub fn new(value: Option<&[u8]>) -> Self {
        Self(value.map(Box::from))
    }

    /// The header's value, if the request had the header.
    pub fn value(&self) -> Option<&[u8]> {
        self.0.as_deref()
    }
}

impl fmt::Display for HeaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("(none)"),
            Some(bytes) => write!(f, "{}", bytes.escape_ascii()),
        }
    }
}

impl fmt::Debug for HeaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HeaderKey({self})")
    }
}

/// A header's value, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct HeaderRef<'a>(Option<&'a [u8]>);

impl Hash for HeaderRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `HeaderKey`'s derived hash: the `Option`, then the slice.
        self.0.hash(state);
    }
}

impl Lookup<HeaderKey> for HeaderRef<'_> {
    #[inline]
    fn matches(&self, key: &HeaderKey) -> bool {
        self.0 == key.0.as_deref()
    }

    fn to_key(&self) -> HeaderKey {
        HeaderKey::new(self.0)
    }
}

#[cfg(feature = "http")]
impl KeySource for Header {
    type Key = HeaderKey;
}

#[cfg(feature = "http")]
impl<B> KeyOf<http::Request<B>> for Header {
    type Lookup<'a>
        = HeaderRef<'a>
    where
        B: 'a;

    #[inline]
    fn key_of<'a>(&'a self, req: &'a http::Request<B>) -> HeaderRef<'a> {
        HeaderRef(req.headers().get(&self.name).map(|v| v.as_bytes()))
    }
}

#[cfg(feature = "reqwest")]
impl KeyOf<reqwest::Request> for Header {
    type Lookup<'a> = HeaderRef<'a>;

    #[inline]
    fn key_of<'a>(&'a self, req: &'a reqwest::Request) -> HeaderRef<'a> {
        HeaderRef(req.headers().get(&self.name).map(|v| v.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;

    #[test]
    fn a_borrowed_key_hashes_and_matches_as_the_owned_one() {
        let hasher = RandomState::new();
        let owned = HostPort::new("Example.COM", 443);
        let borrowed = HostPortRef {
            host: "example.com",
            port: 443,
        };
        assert_eq!(hasher.hash_one(&owned), hasher.hash_one(borrowed));
        assert!(borrowed.matches(&owned));
        assert!(
            !HostPortRef {
                host: "example.com",
                port: 80
            }
            .matches(&owned)
        );
        assert!(
            !HostPortRef {
                host: "example.co",
                port: 443
            }
            .matches(&owned)
        );
        assert_eq!(borrowed.to_key(), owned);
        assert_ne!(
            hasher.hash_one(&owned),
            hasher.hash_one(HostPort::new("example.com", 80)),
            "the port is hashed"
        );
        assert_ne!(
            hasher.hash_one(&owned),
            hasher.hash_one(HostPort::new("example.org", 443)),
            "the host is hashed"
        );
        assert_eq!(owned.to_string(), "example.com:443");
        assert_eq!(format!("{owned:?}"), "HostPort(example.com:443)");
        assert_eq!(HostPort::new("", 0).to_string(), "(no host):0");

        let header = HeaderKey::new(Some(b"acme"));
        let found = HeaderRef(Some(b"acme"));
        assert_eq!(hasher.hash_one(&header), hasher.hash_one(found));
        assert!(found.matches(&header));
        assert!(!HeaderRef(None).matches(&header));
        assert_eq!(
            hasher.hash_one(HeaderKey::new(None)),
            hasher.hash_one(HeaderRef(None))
        );
        assert_eq!(header.to_string(), "acme");
        assert_eq!(format!("{header:?}"), "HeaderKey(acme)");
        assert_eq!(HeaderKey::new(None).to_string(), "(none)");
        assert_eq!(HeaderKey::new(Some(b"a\xffb")).to_string(), "a\\xffb");
    }

    #[cfg(feature = "http")]
    #[test]
    fn host_and_port_of_http_requests() {
        let key = |req: http::Request<()>| HostAndPort.key_of(&req).to_key().to_string();
        let get = |uri: &str| http::Request::get(uri).body(()).unwrap();
        assert_eq!(key(get("http://Example.com/a")), "example.com:80");
        assert_eq!(key(get("https://example.com/a")), "example.com:443");
        assert_eq!(key(get("http://127.0.0.1:8080/")), "127.0.0.1:8080");
        assert_eq!(key(get("http://[::1]:9000/")), "[::1]:9000");
        assert_eq!(key(get("ws://example.com/")), "example.com:80");
        assert_eq!(key(get("wss://example.com/")), "example.com:443");
        assert_eq!(
            key(get("ftp://example.com/")),
            "example.com:0",
            "no default known"
        );
        assert_eq!(key(get("/relative")), "(no host):0");
        let with_host = |value: &str| {
            http::Request::get("/x")
                .header(http::header::HOST, value)
                .body(())
                .unwrap()
        };
        assert_eq!(key(with_host("api.internal:8443")), "api.internal:8443");
        assert_eq!(key(with_host("api.internal")), "api.internal:0");
        assert_eq!(key(with_host("[::1]:81")), "[::1]:81");
        assert_eq!(key(with_host("[::1]")), "[::1]:0");
    }

    #[cfg(feature = "http")]
    #[test]
    fn header_of_http_requests() {
        let tenant = Header::new(http::HeaderName::from_static("x-tenant"));
        let req = http::Request::get("/")
            .header("x-tenant", "acme")
            .body(())
            .unwrap();
        assert_eq!(tenant.key_of(&req).to_key(), HeaderKey::new(Some(b"acme")));
        let bare = http::Request::get("/").body(()).unwrap();
        assert_eq!(tenant.key_of(&bare).to_key(), HeaderKey::new(None));
    }

    #[cfg(feature = "reqwest")]
    #[test]
    fn host_and_port_of_reqwest_requests() {
        let req = reqwest::Request::new(
            reqwest::Method::GET,
            "https://API.example.com/v1".parse().unwrap(),
        );
        assert_eq!(
            HostAndPort.key_of(&req).to_key().to_string(),
            "api.example.com:443"
        );
    }
}
