//! Who may use the dashboard: the rules core applies in front of each
//! route, on top of the operator credential (`hive-core`'s `http/guard.rs`
//! checks that every request presents it).
//!
//! What the rules refuse is a *web page* acting through the operator's
//! browser, which attaches the credential cookie by itself:
//!
//! - every request's `Host` must be a loopback name (`localhost`,
//!   `127.0.0.0/8`, `[::1]`) unless the dashboard binds beyond loopback, so
//!   a DNS-rebinding page whose name resolves to 127.0.0.1 can neither read
//!   nor act;
//! - a state-changing request that carries `Sec-Fetch-Site` must say
//!   `same-origin` (or `none`), and one that carries `Origin` must name this
//!   very origin (`http://<Host>`): another site, another port on localhost
//!   or a sandboxed `null` origin are refused;
//! - a state-changing request authenticated by the cookie (an *ambient*
//!   credential) must also prove where it comes from: a same-origin
//!   `Origin` or `Sec-Fetch-Site: same-origin`. A missing header proves
//!   nothing. Only a bearer token (a script, which holds no ambient
//!   credential) may omit both;
//! - such a request must carry `Content-Type: application/json`, which no
//!   cross-site form can send without a CORS preflight, and the dashboard
//!   answers no preflight.
//!
//! Pure functions on header values: the server adapts its own request and
//! response types.

use std::net::IpAddr;

/// The headers of a request that the rules look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHeaders<'a> {
    /// Anything but GET and HEAD.
    pub state_changing: bool,
    /// The server is reached under a non-loopback name and checks an
    /// operator credential instead (a DNS-rebinding page cannot present
    /// it): any `Host` is accepted, the origin rules still apply.
    pub allow_any_host: bool,
    /// The credential came with the request by itself (the cookie): a
    /// state-changing request must then show it comes from the page.
    pub ambient_credential: bool,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub sec_fetch_site: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 403: the `Host` is not a loopback name.
    Host(String),
    /// 403: a state-changing request from another origin.
    CrossOrigin(String),
    /// 403: a cookie-authenticated state-changing request that names no
    /// origin (neither `Origin` nor `Sec-Fetch-Site: same-origin`).
    NoOrigin,
    /// 415: a state-changing request without a JSON body.
    NotJson,
}

impl Refusal {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Host(_) | Refusal::CrossOrigin(_) | Refusal::NoOrigin => 403,
            Refusal::NotJson => 415,
        }
    }

    /// What to tell the client; `page` names the page for the host hint.
    pub fn message(&self, page: &str) -> String {
        match self {
            Refusal::Host(host) => format!(
                "host {host:?} is not a loopback name: open the {page} as http://127.0.0.1:<port>/ or http://localhost:<port>/"
            ),
            Refusal::CrossOrigin(origin) => format!("cross-origin request from {origin} refused"),
            Refusal::NoOrigin => format!(
                "a request that changes something must come from the {page} itself (Origin or \
                 Sec-Fetch-Site: same-origin), or authenticate with `Authorization: Bearer`"
            ),
            Refusal::NotJson => "send the request body as application/json".to_owned(),
        }
    }
}

/// Applies the rules.
pub fn check(request: &RequestHeaders<'_>) -> Result<(), Refusal> {
    if let Some(host) = request.host
        && !request.allow_any_host
        && !is_loopback_host(host)
    {
        return Err(Refusal::Host(host.to_owned()));
    }
    if !request.state_changing {
        return Ok(());
    }
    if let Some(site) = request.sec_fetch_site
        && site != "same-origin"
        && site != "none"
    {
        let origin = request
            .origin
            .map_or_else(|| format!("a {site} page"), str::to_owned);
        return Err(Refusal::CrossOrigin(origin));
    }
    if let Some(origin) = request.origin {
        let same = request
            .host
            .is_some_and(|host| origin.eq_ignore_ascii_case(&format!("http://{host}")));
        if !same {
            return Err(Refusal::CrossOrigin(origin.to_owned()));
        }
    } else if request.ambient_credential && request.sec_fetch_site != Some("same-origin") {
        return Err(Refusal::NoOrigin);
    }
    let json = request
        .content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if json { Ok(()) } else { Err(Refusal::NotJson) }
}

/// Applies the rules to a request given its method and a header lookup
/// (lowercase names). The lookup should decode lossily: a header that is
/// not visible ASCII must still be checked (and refused), never read as
/// absent.
pub fn check_request(
    method: &str,
    allow_any_host: bool,
    ambient_credential: bool,
    header: impl Fn(&str) -> Option<String>,
) -> Result<(), Refusal> {
    let (host, origin) = (header("host"), header("origin"));
    let (site, content_type) = (header("sec-fetch-site"), header("content-type"));
    check(&RequestHeaders {
        state_changing: method != "GET" && method != "HEAD",
        allow_any_host,
        ambient_credential,
        host: host.as_deref(),
        origin: origin.as_deref(),
        sec_fetch_site: site.as_deref(),
        content_type: content_type.as_deref(),
    })
}

/// `localhost`, `*.localhost`, an IPv4 address in 127.0.0.0/8 or `[::1]`,
/// with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Headers every answer of the dashboard and of the harness's page carries: the pages' Content
/// Security Policy (no inline script runs), no sniffing, no referrer, no
/// framing. (`Cache-Control: no-store` is added where none is set.)
pub const RESPONSE_HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", crate::CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:7777",
            "127.8.9.1:1",
            "localhost",
            "LOCALHOST:80",
            "hive.localhost:7777",
            "[::1]",
            "[::1]:7777",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7777",
            "10.0.0.1:7777",
            "localhost.evil.example",
            "[::2]:1",
            "[::1]x",
            "127.0.0.1:x",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    fn post<'a>(
        origin: Option<&'a str>,
        site: Option<&'a str>,
        ct: Option<&'a str>,
    ) -> RequestHeaders<'a> {
        RequestHeaders {
            state_changing: true,
            allow_any_host: false,
            ambient_credential: false,
            host: Some("127.0.0.1:7777"),
            origin,
            sec_fetch_site: site,
            content_type: ct,
        }
    }

    #[test]
    fn rules() {
        let json = Some("application/json; charset=utf-8");
        assert_eq!(
            check(&post(
                Some("http://127.0.0.1:7777"),
                Some("same-origin"),
                json
            )),
            Ok(())
        );
        assert_eq!(check(&post(None, None, json)), Ok(()), "a bearer client");
        let cookie = |origin, site| RequestHeaders {
            ambient_credential: true,
            ..post(origin, site, json)
        };
        assert_eq!(
            check(&cookie(None, None)),
            Err(Refusal::NoOrigin),
            "a cookie alone proves nothing"
        );
        assert_eq!(check(&cookie(None, Some("none"))), Err(Refusal::NoOrigin));
        assert_eq!(check(&cookie(None, Some("same-origin"))), Ok(()));
        assert_eq!(check(&cookie(Some("http://127.0.0.1:7777"), None)), Ok(()));
        let cookie_read = RequestHeaders {
            state_changing: false,
            ..cookie(None, None)
        };
        assert_eq!(check(&cookie_read), Ok(()), "reads need no origin");
        assert_eq!(
            check(&post(Some("http://evil.example"), None, json)),
            Err(Refusal::CrossOrigin("http://evil.example".into()))
        );
        assert_eq!(
            check(&post(None, Some("cross-site"), json)),
            Err(Refusal::CrossOrigin("a cross-site page".into()))
        );
        assert_eq!(
            check(&post(Some("null"), None, json)),
            Err(Refusal::CrossOrigin("null".into()))
        );
        assert_eq!(
            check(&post(Some("http://127.0.0.1:8100"), None, json)),
            Err(Refusal::CrossOrigin("http://127.0.0.1:8100".into())),
            "another port is another origin"
        );
        assert_eq!(
            check(&post(None, None, Some("text/plain"))),
            Err(Refusal::NotJson)
        );
        let read = RequestHeaders {
            host: Some("evil.example"),
            ..RequestHeaders::default()
        };
        assert_eq!(check(&read), Err(Refusal::Host("evil.example".into())));
        let open = RequestHeaders {
            allow_any_host: true,
            ..read
        };
        assert_eq!(
            check(&open),
            Ok(()),
            "a credential replaces the loopback rule"
        );
        assert_eq!(Refusal::NotJson.status(), 415);
        assert!(
            Refusal::Host("x".into())
                .message("dashboard")
                .contains("open the dashboard as")
        );
    }
}
