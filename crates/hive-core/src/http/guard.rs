//! Who may use the dashboard: a middleware in front of every route.
//!
//! Every request, loopback included, must present the operator credential
//! (a token core generates at start unless the operator gives one): as
//! `Authorization: Bearer <token>` (scripts) or as the HttpOnly,
//! `SameSite=Strict` cookie that `GET /login?token=…` sets (browsers). The
//! one exception is `/login` itself. An agent on the host's network, a page
//! on another site, a DNS-rebinding page: none of them holds the token.
//!
//! On top of it, the rules of [`hive_web::guard`]: a loopback `Host` while
//! the listener is loopback; state-changing requests only from the page's
//! own origin, and a cookie-authenticated one must *show* that origin (a
//! missing `Origin` is not a pass); JSON bodies only.
//!
//! Every response gets the page's Content Security Policy (no inline
//! script can run) unless the handler set a stricter one (the agent proxy
//! does), `nosniff`, no referrer and no framing.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Json, Response};
use hive_web::guard::RESPONSE_HEADERS;
pub(crate) use hive_web::guard::Refusal;

use super::Outcome;

pub async fn guard(State(app): State<super::App>, request: Request, next: Next) -> Response {
    let token = app.coord.settings.operator_token.as_str();
    let allow_any_host = app
        .coord
        .dashboard_addr
        .is_some_and(|addr| !addr.ip().is_loopback());
    let headers = request.headers();
    let credential = presented(headers, token);
    let ambient = credential == Some(Credential::Cookie);
    if let Err(refusal) = check(request.method(), headers, allow_any_host, ambient) {
        return with_headers(refuse(&refusal));
    }
    if credential.is_none() && request.uri().path() != LOGIN_PATH {
        return with_headers(unauthorized(headers));
    }
    with_headers(next.run(request).await)
}

/// Where a browser trades the operator token for a cookie.
pub const LOGIN_PATH: &str = "/login";
/// The cookie carrying the operator credential.
pub const COOKIE: &str = "hive_operator";

/// How a request presented the operator credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credential {
    /// `Authorization: Bearer`: set by whoever wrote the request.
    Bearer,
    /// The cookie: attached by the browser whoever made it send the request.
    Cookie,
}

/// How the request carries `token`, if it does; a bearer token wins.
pub(crate) fn presented(headers: &HeaderMap, token: &str) -> Option<Credential> {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "))
        .any(|given| same_secret(given.trim(), token));
    if bearer {
        return Some(Credential::Bearer);
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .any(|given| same_secret(given.trim(), token));
    cookie.then_some(Credential::Cookie)
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn same_secret(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    diff == 0
}

const NEEDS_LOGIN: &str = "operator credential required: open the login link `hive up` printed \
     (or run `hive dashboard-url`) in this browser, or send `Authorization: Bearer <token>` \
     (the token is in <run-dir>/operator-token)";

/// The 401: a short page for a browser, JSON for everything else.
fn unauthorized(headers: &HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html {
        let page = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
            <title>hyperhive: log in</title></head><body>\
            <h1>hyperhive: log in</h1>\
            <p>This dashboard needs the operator credential. Open the login link that \
            <code>hive up</code> printed when the hive started, or run \
            <code>hive dashboard-url</code> on the host and open the link it prints.</p>\
            </body></html>\n";
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }
    (StatusCode::UNAUTHORIZED, Json(Outcome::failed(NEEDS_LOGIN))).into_response()
}

fn refuse(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    (status, Json(Outcome::failed(refusal.message("dashboard")))).into_response()
}

/// The rules of [`hive_web::guard`] applied to one request.
pub(crate) fn check(
    method: &Method,
    headers: &HeaderMap,
    allow_any_host: bool,
    ambient_credential: bool,
) -> Result<(), Refusal> {
    hive_web::guard::check_request(
        method.as_str(),
        allow_any_host,
        ambient_credential,
        |name| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        },
    )
}

fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in RESPONSE_HEADERS {
        let name = HeaderName::from_static(name);
        if name == header::CONTENT_SECURITY_POLICY && headers.contains_key(&name) {
            // The agent proxy's sandbox policy is stricter; keep it.
            continue;
        }
        headers.insert(name, HeaderValue::from_static(value));
    }
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
    fn reads_need_a_loopback_host_only() {
        assert_eq!(check(&Method::GET, &headers(&[HOST]), false, true), Ok(()));
        assert_eq!(
            check(
                &Method::GET,
                &headers(&[HOST, ("origin", "http://evil.example")]),
                false,
                false
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &Method::GET,
                &headers(&[("host", "evil.example:7777")]),
                false,
                false
            ),
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
                ]),
                false,
                false
            ),
            Ok(())
        );
        // A bearer client: no Origin, no Sec-Fetch-Site.
        assert_eq!(check(&post, &headers(&[HOST, JSON]), false, false), Ok(()));
        // The cookie alone is not enough: the browser attaches it to any
        // request, so the request must show it comes from the page.
        assert_eq!(
            check(&post, &headers(&[HOST, JSON]), false, true),
            Err(Refusal::NoOrigin)
        );
        assert_eq!(
            check(
                &post,
                &headers(&[HOST, JSON, ("sec-fetch-site", "same-origin")]),
                false,
                true
            ),
            Ok(())
        );
        // Another site, another port, a sandboxed frame.
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:8100",
            "null",
            "https://127.0.0.1:7777",
        ] {
            assert_eq!(
                check(
                    &post,
                    &headers(&[HOST, JSON, ("origin", origin)]),
                    false,
                    true
                ),
                Err(Refusal::CrossOrigin(origin.into())),
                "{origin}"
            );
        }
        assert!(matches!(
            check(
                &post,
                &headers(&[HOST, JSON, ("sec-fetch-site", "same-site")]),
                false,
                false
            ),
            Err(Refusal::CrossOrigin(_))
        ));
        // A form post.
        assert_eq!(
            check(
                &post,
                &headers(&[HOST, ("content-type", "text/plain;charset=UTF-8")]),
                false,
                false
            ),
            Err(Refusal::NotJson)
        );
        assert_eq!(
            check(
                &post,
                &headers(&[HOST, ("content-type", "application/json; charset=utf-8")]),
                false,
                false
            ),
            Ok(())
        );
    }
}

#[cfg(test)]
mod credential_tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("0123456789abcdef", "0123456789abcdef"));
        assert!(!same_secret("0123456789abcdeX", "0123456789abcdef"));
        assert!(!same_secret("0123456789abcdef0", "0123456789abcdef"));
        assert!(!same_secret("", "0123456789abcdef"));
    }

    #[test]
    fn bearer_or_cookie() {
        let token = "0123456789abcdef";
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h, token), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdef"),
        );
        assert_eq!(presented(&h, token), Some(Credential::Bearer));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; hive_operator=0123456789abcdef"),
        );
        assert_eq!(presented(&h, token), Some(Credential::Cookie));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdef"),
        );
        assert_eq!(presented(&h, token), Some(Credential::Bearer));
        h.remove(header::AUTHORIZATION);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("hive_operator=nope"),
        );
        assert_eq!(presented(&h, token), None);
    }
}
