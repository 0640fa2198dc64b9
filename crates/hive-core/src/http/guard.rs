//! Who may use the dashboard: a middleware in front of every route.
//!
//! The listener only ever binds loopback, and the dashboard has no login:
//! anyone who can open a connection to it is the operator. What it must
//! refuse is a *web page* acting through the operator's browser:
//!
//! - every request's `Host` must be a loopback name (`localhost`,
//!   `127.0.0.0/8`, `[::1]`), so a DNS-rebinding page whose name resolves to
//!   127.0.0.1 can neither read the state nor act;
//! - a request other than GET/HEAD that carries `Sec-Fetch-Site` must say
//!   `same-origin` (or `none`), and one that carries `Origin` must name
//!   this very origin (`http://<Host>`): another site, another port on
//!   localhost (an agent's own web page) or a sandboxed `null` origin get
//!   403. A request with neither header is a non-browser client (curl, a
//!   script) and is let through — it holds no ambient credential to abuse;
//! - such a request must carry `Content-Type: application/json`, which no
//!   cross-site form can send without a CORS preflight, and this server
//!   answers no preflight.
//!
//! Every response gets the page's Content Security Policy (no inline
//! script can run), `nosniff`, no referrer and no framing.

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};

use super::Outcome;

pub async fn guard(request: Request, next: Next) -> Response {
    if let Err(refusal) = check(request.method(), request.headers()) {
        return with_headers(refusal.into_response());
    }
    with_headers(next.run(request).await)
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 403: the `Host` is not a loopback name.
    Host(String),
    /// 403: a state-changing request from another origin.
    CrossOrigin(String),
    /// 415: a state-changing request without a JSON body.
    NotJson,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Refusal::Host(host) => (
                StatusCode::FORBIDDEN,
                format!(
                    "host {host:?} is not a loopback name: open the dashboard as http://127.0.0.1:<port>/ or http://localhost:<port>/"
                ),
            ),
            Refusal::CrossOrigin(origin) => (
                StatusCode::FORBIDDEN,
                format!("cross-origin request from {origin} refused"),
            ),
            Refusal::NotJson => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the request body as application/json".to_owned(),
            ),
        };
        (status, Json(Outcome::failed(message))).into_response()
    }
}

pub(crate) fn check(method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    if let Some(host) = &host
        && !is_loopback_host(host)
    {
        return Err(Refusal::Host(host.clone()));
    }
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = String::from_utf8_lossy(site.as_bytes());
        if site != "same-origin" && site != "none" {
            let origin = headers
                .get(header::ORIGIN)
                .map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned())
                .unwrap_or_else(|| format!("a {site} page"));
            return Err(Refusal::CrossOrigin(origin));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let same = host
            .as_deref()
            .is_some_and(|host| origin.eq_ignore_ascii_case(&format!("http://{host}")));
        if !same {
            return Err(Refusal::CrossOrigin(origin));
        }
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Refusal::NotJson);
    }
    Ok(())
}

/// `localhost`, `*.localhost`, an IPv4 address in 127.0.0.0/8 or `[::1]`,
/// with or without a port.
fn is_loopback_host(host: &str) -> bool {
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

fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(hive_web::CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const HOST: (&str, &str) = ("host", "127.0.0.1:7777");
    const JSON: (&str, &str) = ("content-type", "application/json");

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

    #[test]
    fn reads_need_a_loopback_host_only() {
        assert_eq!(check(&Method::GET, &headers(&[HOST])), Ok(()));
        assert_eq!(
            check(
                &Method::GET,
                &headers(&[HOST, ("origin", "http://evil.example")])
            ),
            Ok(())
        );
        assert_eq!(
            check(&Method::GET, &headers(&[("host", "evil.example:7777")])),
            Err(Refusal::Host("evil.example:7777".into()))
        );
    }

    #[test]
    fn actions_need_the_same_origin_and_json() {
        let post = Method::POST;
        // The page itself.
        assert_eq!(
            check(
                &post,
                &headers(&[
                    HOST,
                    JSON,
                    ("origin", "http://127.0.0.1:7777"),
                    ("sec-fetch-site", "same-origin")
                ])
            ),
            Ok(())
        );
        // A CLI client: no Origin, no Sec-Fetch-Site.
        assert_eq!(check(&post, &headers(&[HOST, JSON])), Ok(()));
        // Another site, another port, a sandboxed frame.
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:8100",
            "null",
            "https://127.0.0.1:7777",
        ] {
            assert_eq!(
                check(&post, &headers(&[HOST, JSON, ("origin", origin)])),
                Err(Refusal::CrossOrigin(origin.into())),
                "{origin}"
            );
        }
        assert!(matches!(
            check(
                &post,
                &headers(&[HOST, JSON, ("sec-fetch-site", "same-site")])
            ),
            Err(Refusal::CrossOrigin(_))
        ));
        // A form post.
        assert_eq!(
            check(
                &post,
                &headers(&[HOST, ("content-type", "text/plain;charset=UTF-8")])
            ),
            Err(Refusal::NotJson)
        );
        assert_eq!(
            check(
                &post,
                &headers(&[HOST, ("content-type", "application/json; charset=utf-8")])
            ),
            Ok(())
        );
    }
}
