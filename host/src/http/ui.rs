//! The operator dashboard at `/ui/`: three static files compiled into the
//! binary, served with a strict Content-Security-Policy (no inline script
//! or style, nothing from elsewhere). It is a client of the API like any
//! other: it holds no privilege of its own, and every action it offers
//! asks for the bearer token. Not part of the API (nor of `ROUTES` and the
//! OpenAPI document).

use warp::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use warp::{Filter, Reply};

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// The dashboard's policy: its own script, style and API, nothing else.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(body: &'static str, kind: &'static str) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, kind.parse().expect("a valid header"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        CSP.parse().expect("a valid header"),
    );
    headers.insert(CACHE_CONTROL, "no-cache".parse().expect("a valid header"));
    headers.insert(
        "x-content-type-options",
        "nosniff".parse().expect("a valid header"),
    );
    headers.insert(
        "referrer-policy",
        "no-referrer".parse().expect("a valid header"),
    );
    response
}

/// `GET /ui` (redirect to `/ui/`, so relative asset links resolve),
/// `/ui/`, `/ui/app.js`, `/ui/app.css`.
pub fn routes() -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    warp::get()
        .and(warp::path("ui"))
        .and(warp::path::full())
        .and_then(|full: warp::path::FullPath| async move {
            Ok::<_, warp::Rejection>(match full.as_str() {
                "/ui" => {
                    warp::redirect::see_other(warp::http::Uri::from_static("/ui/")).into_response()
                }
                "/ui/" | "/ui/index.html" => asset(INDEX, "text/html; charset=utf-8"),
                "/ui/app.js" => asset(SCRIPT, "text/javascript; charset=utf-8"),
                "/ui/app.css" => asset(STYLE, "text/css; charset=utf-8"),
                _ => return Err(warp::reject::not_found()),
            })
        })
        .boxed()
}
