//! The route table of toxiproxy 2.x: a request's method and path to the
//! registry's operation, and its answer in toxiproxy's shapes.

use std::collections::BTreeMap;

use serde::Serialize;

use super::http::{Answer, Request};
use super::model::{ApiError, ProxyInput, ProxyView, parse_body, to_json};
use super::registry::Registry;
use super::toxic::{ToxicChange, ToxicInput};
use crate::turn::Turn;

/// A route the API knows, its path's names bound.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Version,
    Proxies,
    Populate,
    Reset,
    Proxy(&'a str),
    Toxics(&'a str),
    Toxic(&'a str, &'a str),
}

/// The route `path` names, or `None` (404).
fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(match parts[..] {
        ["version"] => Route::Version,
        ["proxies"] => Route::Proxies,
        ["populate"] => Route::Populate,
        ["reset"] => Route::Reset,
        ["proxies", name] => Route::Proxy(name),
        ["proxies", name, "toxics"] => Route::Toxics(name),
        ["proxies", name, "toxics", toxic] => Route::Toxic(name, toxic),
        _ => return None,
    })
}

/// The methods each route takes.
fn methods(route: &Route<'_>) -> &'static [&'static str] {
    match route {
        Route::Version => &["GET"],
        Route::Proxies | Route::Toxics(_) => &["GET", "POST"],
        Route::Populate | Route::Reset => &["POST"],
        Route::Proxy(_) | Route::Toxic(..) => &["GET", "POST", "PATCH", "DELETE"],
    }
}

/// Answers `request`, changing `registry` as it asks.
pub(crate) fn answer(request: &Request, registry: &mut Registry, t: &mut Turn<'_>) -> Answer {
    let Some(route) = route(&request.path) else {
        return Answer::error(404, &format!("no route {}", request.path));
    };
    let method = request.method.as_str();
    if !methods(&route).contains(&method) {
        let allowed = methods(&route).join(", ");
        return Answer::error(405, &format!("{method} {}: use {allowed}", request.path));
    }
    // As toxiproxy: a web page must not drive the API.
    let agent = request.user_agent.as_deref().unwrap_or_default();
    if agent.starts_with("Mozilla/") {
        return Answer::error(403, "User agent not allowed");
    }
    serve(route, method, &request.body, registry, t).unwrap_or_else(|e| e.answer())
}

fn ok(value: &impl Serialize) -> Result<Answer, ApiError> {
    Ok(Answer::json(200, to_json(value)))
}

fn serve(
    route: Route<'_>,
    method: &str,
    body: &[u8],
    registry: &mut Registry,
    t: &mut Turn<'_>,
) -> Result<Answer, ApiError> {
    match (route, method) {
        (Route::Version, _) => {
            let version = serde_json::json!({ "version": env!("CARGO_PKG_VERSION") });
            ok(&version)
        }
        (Route::Proxies, "GET") => {
            let all: BTreeMap<&str, ProxyView<'_>> = (registry.proxies())
                .map(|p| (p.name.as_str(), p.view()))
                .collect();
            ok(&all)
        }
        (Route::Proxies, _) => {
            let spec = parse_body::<ProxyInput>(body)?.spec(None)?;
            let proxy = registry.create(spec, t)?;
            Ok(Answer::json(201, to_json(&proxy.view())))
        }
        (Route::Populate, _) => populate(body, registry, t),
        (Route::Reset, _) => {
            registry.reset(t)?;
            Ok(Answer::no_content())
        }
        (Route::Proxy(name), "GET") => ok(&registry.get(name)?.view_with_stats()),
        (Route::Proxy(name), "DELETE") => {
            registry.delete(name, t)?;
            Ok(Answer::no_content())
        }
        (Route::Proxy(name), _) => {
            registry.get(name)?;
            let input = parse_body::<ProxyInput>(body)?;
            ok(&registry.update(name, input, t)?.view())
        }
        (Route::Toxics(name), "GET") => ok(&registry.get(name)?.view().toxics),
        (Route::Toxics(name), _) => {
            registry.get(name)?;
            let input = parse_body::<ToxicInput>(body)?;
            ok(registry.add_toxic(name, input, t)?)
        }
        (Route::Toxic(name, toxic), "GET") => ok(registry.toxic(name, toxic)?),
        (Route::Toxic(name, toxic), "DELETE") => {
            registry.remove_toxic(name, toxic, t)?;
            Ok(Answer::no_content())
        }
        (Route::Toxic(name, toxic), _) => {
            registry.toxic(name, toxic)?;
            let change = parse_body::<ToxicChange>(body)?;
            ok(registry.change_toxic(name, toxic, change, t)?)
        }
    }
}

/// `POST /populate`: 201 and `{"proxies": [...]}`, or the error with the
/// proxies made before it, as toxiproxy answers.
fn populate(body: &[u8], registry: &mut Registry, t: &mut Turn<'_>) -> Result<Answer, ApiError> {
    let inputs = parse_body::<Vec<ProxyInput>>(body)?;
    let (names, error) = registry.populate(inputs, t);
    let proxies: Vec<ProxyView<'_>> = (names.iter())
        .filter_map(|name| registry.get(name).ok())
        .map(|proxy| proxy.view())
        .collect();
    let (status, body) = match error {
        None => (201, serde_json::json!({ "proxies": proxies })),
        Some(e) => (
            e.status,
            serde_json::json!({ "error": e.message, "status": e.status, "proxies": proxies }),
        ),
    };
    Ok(Answer::json(status, to_json(&body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_routes() {
        assert_eq!(route("/version"), Some(Route::Version));
        assert_eq!(route("/proxies/a"), Some(Route::Proxy("a")));
        assert_eq!(route("/proxies/a/toxics/b"), Some(Route::Toxic("a", "b")));
        for path in ["", "/", "/proxies/", "//proxies", "/proxies/a/b", "/nope"] {
            assert_eq!(route(path), None, "{path:?}");
        }
    }
}
