//! Who may do what through HTTP: the one gate every request passes before its handler.
//!
//! - Webhooks (`/hooks/*`) carry their own proof (a signature or a token per repository)
//!   and pass untouched.
//! - Every other request must name this controller in `Host` (an IP address, `localhost`
//!   or a name listed in `api.hosts`), so a page whose DNS name was rebound to the
//!   controller's address cannot read it.
//! - A request that changes something (any method but GET and HEAD) is refused when it comes
//!   from another origin (`Origin`, `Sec-Fetch-Site`), and its body must be JSON: a form on
//!   another site can send neither a JSON content type without a CORS preflight (which is
//!   never granted) nor an `Authorization` header.
//! - Reads need a token with the `read` scope (unless `api.anonymous_read`), triggering
//!   `trigger`, cancelling `cancel`. A token comes as `Authorization: Bearer …` or, for the
//!   build page, as the `HttpOnly`, `SameSite=Strict` cookie `POST /api/session` sets, which
//!   a browser never sends with a request another site starts.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use valet_store::Scope;

use crate::config::ApiAccess;
use crate::{Controller, blocking};

/// The cookie that carries the build page's token.
pub const COOKIE: &str = "valet_token";

/// Who made a request, for the handlers (a cancel names its caller).
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The token's name; `None` for an anonymous read.
    pub token: Option<String>,
}

/// What a request needs before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Webhooks: verified by their handlers; no host check either (they come from a forge
    /// that knows the controller by whatever name the operator gave it).
    Webhook,
    /// Health, the page's static assets and signing in.
    Open,
    Scope(Scope),
}

/// The need of `method path`.
pub(crate) fn need(method: &Method, path: &str) -> Need {
    if path.starts_with("/hooks/") {
        return Need::Webhook;
    }
    if path == "/healthz" || path.starts_with("/ui/") || path == "/api/session" {
        return Need::Open;
    }
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::POST, ["", "api", "repos", _, "builds"]) => Need::Scope(Scope::Trigger),
        (&Method::POST, ["", "api", "builds", _, "cancel"]) => Need::Scope(Scope::Cancel),
        // Every other call, whatever its method, at least reads; the router answers the
        // ones it does not know.
        _ => Need::Scope(Scope::Read),
    }
}

fn safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`), lower case.
fn host_name(value: &str) -> String {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        v.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(v, |(h, _)| h)
    };
    host.to_ascii_lowercase()
}

/// Whether a request naming `host` (a `Host` value) is for this controller.
pub(crate) fn host_allowed(access: &ApiAccess, host: &str) -> bool {
    let name = host_name(host);
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok() || access.hosts.contains(&name)
}

/// Whether `origin` (an `Origin` value) is the origin of a request to `host`.
fn same_origin(origin: &str, host: &str) -> bool {
    ["http://", "https://"].iter().any(|s| {
        origin
            .strip_prefix(s)
            .is_some_and(|o| o.eq_ignore_ascii_case(host))
    })
}

/// Why a request from a browser is refused before its token is looked at; `None` when it may
/// go on. `by_cookie`: the token came from the cookie, so the browser chose to send it.
fn cross_site(method: &Method, h: &HeaderMap, host: &str, by_cookie: bool) -> Option<String> {
    if safe(method) {
        return None;
    }
    let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if let Some(o) = origin
        && !same_origin(o, host)
    {
        return Some(format!(
            "a request from another origin ({}) may not change anything here",
            o.chars().take(100).collect::<String>()
        ));
    }
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!("a {site} request may not change anything here"));
    }
    if by_cookie && origin.is_none() {
        return Some("a signed-in page's request must say its Origin".into());
    }
    None
}

/// Whether the body (if any) of a request that changes something is declared JSON.
fn json_body(method: &Method, h: &HeaderMap) -> bool {
    if safe(method) {
        return true;
    }
    let empty = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|l| l.trim() == "0")
        || (h.get(header::CONTENT_LENGTH).is_none() && h.get(header::TRANSFER_ENCODING).is_none());
    let json = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    empty || json
}

/// The token a request carries: from `Authorization: Bearer` first, else from the cookie.
fn presented(h: &HeaderMap) -> Option<(String, bool)> {
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let t = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or("");
        return Some((t.trim().to_string(), false));
    }
    cookie(h, COOKIE).map(|t| (t, true))
}

/// The value of cookie `name`.
pub(crate) fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn refuse(status: StatusCode, path: &str, message: String) -> Response {
    let mut r = if status == StatusCode::UNAUTHORIZED && wants_page(path) {
        crate::ui::sign_in_page(&message)
    } else {
        (status, axum::Json(json!({ "error": message }))).into_response()
    };
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"valet\""),
        );
    }
    r
}

/// Pages a person opens in a browser get the sign-in form instead of JSON.
fn wants_page(path: &str) -> bool {
    path == "/" || path.starts_with("/builds/")
}

/// The gate (an axum middleware).
pub(crate) async fn gate(State(c): State<Controller>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let need = need(&method, &path);
    if need == Need::Webhook {
        return next.run(req).await;
    }
    let access = &c.inner.config.api;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if !host_allowed(access, &host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            &path,
            format!(
                "this controller does not answer to the name `{}`: list it under api.hosts",
                host_name(&host).chars().take(100).collect::<String>()
            ),
        );
    }
    let token = presented(req.headers());
    let by_cookie = token.as_ref().is_some_and(|(_, c)| *c);
    if let Some(why) = cross_site(&method, req.headers(), &host, by_cookie) {
        return refuse(StatusCode::FORBIDDEN, &path, why);
    }
    if !json_body(&method, req.headers()) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &path,
            "a request body must be JSON (Content-Type: application/json)".into(),
        );
    }
    let Need::Scope(scope) = need else {
        return next.run(req).await;
    };
    let caller = match token {
        None if scope == Scope::Read && access.anonymous_read => Caller::default(),
        None => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                &path,
                "authentication required: send `Authorization: Bearer TOKEN` (an operator creates tokens with `valet token create`)".into(),
            );
        }
        Some((secret, _)) => {
            let store = c.inner.store.clone();
            let now = valet_store::now_ms();
            match blocking(move || store.authenticate(&secret, now)).await {
                Ok(Some((name, scopes))) if scopes.contains(&scope) => Caller { token: Some(name) },
                Ok(Some((name, scopes))) => {
                    let has: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
                    tracing::info!(token = %name, need = scope.as_str(), %path, "request refused: scope");
                    return refuse(
                        StatusCode::FORBIDDEN,
                        &path,
                        format!(
                            "the token `{name}` does not have the `{}` scope (it has: {})",
                            scope.as_str(),
                            has.join(", ")
                        ),
                    );
                }
                Ok(None) => {
                    tracing::info!(%path, "request refused: unknown or revoked token");
                    return refuse(
                        StatusCode::UNAUTHORIZED,
                        &path,
                        "the token is not valid (unknown or revoked)".into(),
                    );
                }
                Err(e) => return crate::server::internal(e),
            }
        }
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_scope() {
        let n = |m: Method, p: &str| need(&m, p);
        assert_eq!(n(Method::POST, "/hooks/github"), Need::Webhook);
        assert_eq!(n(Method::GET, "/healthz"), Need::Open);
        assert_eq!(n(Method::GET, "/ui/valet.js"), Need::Open);
        assert_eq!(n(Method::POST, "/api/session"), Need::Open);
        assert_eq!(n(Method::GET, "/api/builds"), Need::Scope(Scope::Read));
        assert_eq!(n(Method::GET, "/metrics"), Need::Scope(Scope::Read));
        assert_eq!(n(Method::GET, "/builds/3"), Need::Scope(Scope::Read));
        assert_eq!(
            n(Method::POST, "/api/repos/org%2Fapp/builds"),
            Need::Scope(Scope::Trigger)
        );
        assert_eq!(
            n(Method::POST, "/api/builds/7/cancel"),
            Need::Scope(Scope::Cancel)
        );
        // A path that only looks open is not: `/healthz/x`, `/hooksx`, `/api/session/x`.
        for p in ["/healthz/x", "/hooksx", "/api/session/x", "/uix"] {
            assert_eq!(n(Method::GET, p), Need::Scope(Scope::Read), "{p}");
        }
    }

    #[test]
    fn hosts_are_ip_addresses_localhost_or_listed() {
        let a = ApiAccess {
            anonymous_read: false,
            hosts: vec!["ci.example.com".into()],
        };
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:80",
            "10.0.0.7",
            "ci.example.com",
            "CI.Example.com:443",
        ] {
            assert!(host_allowed(&a, ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "ci.example.com.evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "x",
        ] {
            assert!(!host_allowed(&a, bad), "{bad}");
        }
    }

    #[test]
    fn changes_from_another_origin_are_refused() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        let host = "127.0.0.1:8080";
        assert!(cross_site(&Method::GET, &h(&[("origin", "http://evil")]), host, true).is_none());
        assert!(cross_site(&Method::POST, &h(&[("origin", "http://evil")]), host, false).is_some());
        assert!(cross_site(&Method::POST, &h(&[("origin", "null")]), host, false).is_some());
        assert!(
            cross_site(
                &Method::POST,
                &h(&[("sec-fetch-site", "cross-site")]),
                host,
                false
            )
            .is_some()
        );
        assert!(
            cross_site(
                &Method::POST,
                &h(&[("origin", "http://127.0.0.1:8080")]),
                host,
                true
            )
            .is_none()
        );
        // A script (curl, CI) sends no Origin and a bearer token: fine. A cookie without an
        // Origin is not what a browser sends for a same-origin POST: refused.
        assert!(cross_site(&Method::POST, &h(&[]), host, false).is_none());
        assert!(cross_site(&Method::POST, &h(&[]), host, true).is_some());
    }

    #[test]
    fn bodies_that_change_things_are_json() {
        let mut m = HeaderMap::new();
        m.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        m.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(!json_body(&Method::POST, &m));
        assert!(json_body(&Method::GET, &m));
        m.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(json_body(&Method::POST, &m));
        m.remove(header::CONTENT_TYPE);
        assert!(!json_body(&Method::POST, &m));
        m.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert!(json_body(&Method::POST, &m));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut m = HeaderMap::new();
        m.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; valet_token=valet_ab; b=2"),
        );
        assert_eq!(cookie(&m, COOKIE).as_deref(), Some("valet_ab"));
        assert_eq!(presented(&m), Some(("valet_ab".into(), true)));
        m.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer valet_cd"),
        );
        assert_eq!(presented(&m), Some(("valet_cd".into(), false)));
    }
}
