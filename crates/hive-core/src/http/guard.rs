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

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Json, Response};
use hive_web::guard::RESPONSE_HEADERS;
pub(crate) use hive_web::guard::Refusal;

use super::Outcome;

pub async fn guard(State(app): State<super::App>, request: Request, next: Next) -> Response {
    let token = app.coord.settings.operator_token.as_deref();
    if let Err(refusal) = check(request.method(), request.headers(), token.is_some()) {
        return with_headers(refuse(&refusal));
    }
    if let Some(token) = token
        && request.uri().path() != LOGIN_PATH
        && !presents(request.headers(), token)
    {
        let message = format!(
            "operator credential required: open {LOGIN_PATH}?token=<token> once in this browser, \
             or send `Authorization: Bearer <token>`"
        );
        let answer = (StatusCode::UNAUTHORIZED, Json(Outcome::failed(message)));
        return with_headers(answer.into_response());
    }
    with_headers(next.run(request).await)
}

/// Where a browser trades the operator token for a cookie.
pub const LOGIN_PATH: &str = "/login";
/// The cookie carrying the operator credential.
pub const COOKIE: &str = "hive_operator";

/// Whether the request carries `token`, as a bearer token or the cookie.
fn presents(headers: &HeaderMap, token: &str) -> bool {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.strip_prefix("Bearer "));
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='));
    bearer
        .chain(cookies)
        .any(|given| same_secret(given.trim(), token))
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

fn refuse(refusal: &Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    (status, Json(Outcome::failed(refusal.message("dashboard")))).into_response()
}

/// The rules of [`hive_web::guard`] applied to one request.
pub(crate) fn check(
    method: &Method,
    headers: &HeaderMap,
    credentialed: bool,
) -> Result<(), Refusal> {
    hive_web::guard::check_request(method.as_str(), credentialed, |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    })
}

fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in RESPONSE_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
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
        assert_eq!(check(&Method::GET, &headers(&[HOST]), false), Ok(()));
        assert_eq!(
            check(
                &Method::GET,
                &headers(&[HOST, ("origin", "http://evil.example")]),
                false
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &Method::GET,
                &headers(&[("host", "evil.example:7777")]),
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
                false
            ),
            Ok(())
        );
        // A CLI client: no Origin, no Sec-Fetch-Site.
        assert_eq!(check(&post, &headers(&[HOST, JSON]), false), Ok(()));
        // Another site, another port, a sandboxed frame.
        for origin in [
            "http://evil.example",
            "http://127.0.0.1:8100",
            "null",
            "https://127.0.0.1:7777",
        ] {
            assert_eq!(
                check(&post, &headers(&[HOST, JSON, ("origin", origin)]), false),
                Err(Refusal::CrossOrigin(origin.into())),
                "{origin}"
            );
        }
        assert!(matches!(
            check(
                &post,
                &headers(&[HOST, JSON, ("sec-fetch-site", "same-site")]),
                false
            ),
            Err(Refusal::CrossOrigin(_))
        ));
        // A form post.
        assert_eq!(
            check(
                &post,
                &headers(&[HOST, ("content-type", "text/plain;charset=UTF-8")]),
                false
            ),
            Err(Refusal::NotJson)
        );
        assert_eq!(
            check(
                &post,
                &headers(&[HOST, ("content-type", "application/json; charset=utf-8")]),
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
        assert!(!presents(&h, token));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdef"),
        );
        assert!(presents(&h, token));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; hive_operator=0123456789abcdef"),
        );
        assert!(presents(&h, token));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("hive_operator=nope"),
        );
        assert!(!presents(&h, token));
    }
}
