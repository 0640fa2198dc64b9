//! `/agent/<name>/…`: each agent's page on the dashboard's origin, behind
//! the operator credential (the guard runs first).
//!
//! What the agent controls never becomes a document or a script on this
//! origin, and what only the operator may do is done here, not by the
//! harness (the agent can reach its own page socket from inside its
//! container):
//!
//! - `GET /agent/<name>/` and `/agent/<name>/assets/<file>`: the page and
//!   its files, embedded in core (`hive_web::AGENT_*`), never proxied;
//! - `POST /agent/<name>/api/send`: a message from the operator to that
//!   agent, [`Coordinator::operator_send`] as the dashboard does;
//! - everything else under the prefix is reverse-proxied to the unix socket
//!   the harness binds in its page dir (`Paths::page_dir`, agent-writable).
//!   The socket is opened without following a link: the page dir with
//!   `O_PATH|O_NOFOLLOW|O_DIRECTORY`, then `page.sock` beneath it with
//!   `O_PATH|O_NOFOLLOW`, `fstat` says it is a socket, and core connects
//!   to `/proc/self/fd/<fd>` — the inode it checked, whatever the agent
//!   renames meanwhile. A link or a file there is a 502, and nothing is
//!   connected to.
//!
//! The forwarded request keeps its method, the path minus the prefix, the
//! query, the body and a short list of headers; never `Cookie` or
//! `Authorization` (the agent never sees the operator's credential). The
//! answer streams back unbuffered (SSE arrives event by event) with its
//! status and a few headers only (no `Set-Cookie`), under a sandboxing
//! Content Security Policy: opened as a document it has an opaque origin
//! and runs no script.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path as FsPath;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{Html, IntoResponse, Json, Redirect, Response};
use axum::routing::{any, get, post};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::actions::Body;
use super::{App, Outcome, agent_name};
use crate::coordinator::Coordinator;
use crate::error::{Error, Result};

/// The harness's socket inside its page dir (`hive_runtime::mount::PAGE_SOCKET`).
pub const SOCKET_NAME: &str = "page.sock";

/// Request headers the harness gets; everything else stays here.
const FORWARDED_REQUEST: [HeaderName; 6] = [
    header::ACCEPT,
    header::ACCEPT_LANGUAGE,
    header::CACHE_CONTROL,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    HeaderName::from_static("last-event-id"),
];

/// Response headers the browser gets from the harness.
const FORWARDED_RESPONSE: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CACHE_CONTROL,
];

/// The policy of every proxied answer: no script, no subresource, an
/// opaque origin if it is ever opened as a document.
pub const SANDBOX_POLICY: &str = "sandbox; default-src 'none'; frame-ancestors 'none'";

/// How long the harness may take to answer a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/agent/{name}", any(add_slash))
        .route("/agent/{name}/", get(page))
        .route("/agent/{name}/assets/{file}", get(asset))
        .route("/agent/{name}/api/send", post(send))
        .route("/agent/{name}/{*rest}", any(proxy))
}

/// `/agent/<name>` → `/agent/<name>/`, so the page's relative URLs resolve.
async fn add_slash(Path(name): Path<String>) -> Result<Redirect> {
    let name = agent_name(&name)?;
    Ok(Redirect::permanent(&format!("/agent/{name}/")))
}

/// The page itself, for a known agent.
async fn page(State(app): State<App>, Path(name): Path<String>) -> Result<Response> {
    let name = agent_name(&name)?;
    crate::status::require_agent(&app.coord.store, &name)?;
    Ok((
        [(header::CACHE_CONTROL, "no-cache")],
        Html(hive_web::AGENT_HTML),
    )
        .into_response())
}

async fn asset(Path((name, file)): Path<(String, String)>) -> Result<Response> {
    agent_name(&name)?;
    let Some(asset) = hive_web::agent_asset(&file) else {
        return Ok(super::not_found().await);
    };
    Ok((
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct SendBody {
    body: String,
}

/// `POST /agent/<name>/api/send` `{body}`: the operator writes to the agent.
async fn send(
    State(app): State<App>,
    Path(name): Path<String>,
    Body(body): Body<SendBody>,
) -> Result<Json<Outcome>> {
    let name = agent_name(&name)?;
    crate::status::require_agent(&app.coord.store, &name)?;
    app.coord.operator_send(&name.into(), &body.body)?;
    Ok(Json(Outcome::done()))
}

/// Everything else: to the harness, and its answer back as it comes.
async fn proxy(State(app): State<App>, request: Request) -> Result<Response> {
    // The raw path: what follows `/agent/<name>` goes to the harness as is.
    let raw = request.uri().path().to_owned();
    let Some((name, rest)) = raw
        .strip_prefix("/agent/")
        .and_then(|tail| tail.split_once('/'))
    else {
        return Err(Error::refused("no agent page here"));
    };
    let name = agent_name(name)?;
    crate::status::require_agent(&app.coord.store, &name)?;
    let target = match request.uri().query() {
        Some(query) => format!("/{rest}?{query}"),
        None => format!("/{rest}"),
    };
    forward(&app.coord, &name, &target, request).await
}

async fn forward(
    coord: &Coordinator,
    name: &hive_proto::AgentName,
    target: &str,
    request: Request,
) -> Result<Response> {
    let unreachable = |why: String| Error::BadGateway(format!("{name}'s page: {why}"));
    // A linked harness's page comes through its tunnel; else the socket.
    let stream: crate::link::PageStream = match coord.settings.link.as_ref() {
        Some(link) if link.tunnels.has(name) => {
            link.tunnels.open(name).await.map_err(unreachable)?
        }
        _ => Box::new(
            connect(&coord.paths.page_dir(name))
                .await
                .map_err(unreachable)?,
        ),
    };
    let (parts, body) = request.into_parts();
    let mut upstream = hyper::Request::builder()
        .method(parts.method)
        .uri(target)
        .header(header::HOST, "page");
    for name in &FORWARDED_REQUEST {
        for value in parts.headers.get_all(name) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(body)
        .map_err(|e| unreachable(format!("bad request: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("agent page connection: {e}");
        }
    });
    let answer = tokio::time::timeout(HEAD_TIMEOUT, sender.send_request(upstream))
        .await
        .map_err(|_| unreachable("no answer in time".to_owned()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let (parts, body) = answer.into_parts();
    let mut response = Response::new(axum::body::Body::new(body));
    *response.status_mut() = parts.status;
    let headers = response.headers_mut();
    for name in &FORWARDED_RESPONSE {
        for value in parts.headers.get_all(name) {
            headers.append(name, value.clone());
        }
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX_POLICY),
    );
    // Streams (SSE) must not wait in a buffering proxy in front of core.
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    Ok(response)
}

/// Connects to the page socket in `page_dir` without following a link.
pub async fn connect(page_dir: &FsPath) -> std::result::Result<tokio::net::UnixStream, String> {
    let socket = open_socket(page_dir)?;
    let path = format!("/proc/self/fd/{}", socket.as_raw_fd());
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .map_err(|e| format!("connect {SOCKET_NAME}: {e} (is the harness running?)"));
    drop(socket);
    stream
}

/// `O_PATH` handles on the page dir (a real directory) and on the socket
/// beneath it (a real socket); a link anywhere is refused, never followed.
fn open_socket(page_dir: &FsPath) -> std::result::Result<OwnedFd, String> {
    use nix::errno::Errno;
    use nix::fcntl::{OFlag, open, openat};
    use nix::sys::stat::{Mode, SFlag, fstat};

    let kind = |fd: &OwnedFd| {
        fstat(fd).map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()))
    };
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = open(page_dir, flags | OFlag::O_DIRECTORY, Mode::empty()).map_err(|e| match e {
        Errno::ENOENT => "the page dir does not exist (was the agent ever started?)".to_owned(),
        Errno::ENOTDIR | Errno::ELOOP => {
            "the page dir is not a directory (a link?): refusing to follow it".to_owned()
        }
        e => format!("open the page dir: {e}"),
    })?;
    if kind(&dir).map_err(|e| format!("stat the page dir: {e}"))? != SFlag::S_IFDIR {
        return Err("the page dir is not a directory: refusing to follow it".to_owned());
    }
    let socket = openat(&dir, SOCKET_NAME, flags, Mode::empty()).map_err(|e| match e {
        Errno::ENOENT => format!("no {SOCKET_NAME}: the harness serves no page (is it running?)"),
        e => format!("open {SOCKET_NAME}: {e}"),
    })?;
    let found = kind(&socket).map_err(|e| format!("stat {SOCKET_NAME}: {e}"))?;
    if found != SFlag::S_IFSOCK {
        let what = if found == SFlag::S_IFLNK {
            "a symbolic link"
        } else {
            "not a socket"
        };
        return Err(format!(
            "{SOCKET_NAME} is {what}: refusing to follow it or connect"
        ));
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_name_is_the_runtimes() {
        assert_eq!(
            FsPath::new(hive_runtime::mount::PAGE_SOCKET)
                .file_name()
                .unwrap(),
            SOCKET_NAME
        );
    }

    #[tokio::test]
    async fn links_are_refused_and_sockets_connected() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("page");
        std::fs::create_dir(&page).unwrap();
        let err = connect(&page).await.unwrap_err();
        assert!(err.contains("no page.sock"), "{err}");

        // A socket elsewhere, and a link to it planted as page.sock.
        let other = dir.path().join("other.sock");
        let listener = std::os::unix::net::UnixListener::bind(&other).unwrap();
        listener.set_nonblocking(true).unwrap();
        std::os::unix::fs::symlink(&other, page.join(SOCKET_NAME)).unwrap();
        let err = connect(&page).await.unwrap_err();
        assert!(err.contains("page.sock is a symbolic link"), "{err}");
        assert!(listener.accept().is_err(), "nothing connected");

        // A file.
        std::fs::remove_file(page.join(SOCKET_NAME)).unwrap();
        std::fs::write(page.join(SOCKET_NAME), "x").unwrap();
        let err = connect(&page).await.unwrap_err();
        assert!(err.contains("not a socket"), "{err}");

        // The page dir itself a link to a dir holding a real socket.
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let _real = std::os::unix::net::UnixListener::bind(real.join(SOCKET_NAME)).unwrap();
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&real, &linked).unwrap();
        let err = connect(&linked).await.unwrap_err();
        assert!(err.contains("not a directory"), "{err}");

        // The real thing connects.
        connect(&real).await.unwrap();
    }
}
