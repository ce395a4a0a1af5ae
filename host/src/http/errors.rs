//! Every error as JSON `{"error", "detail"}` with the right status; a
//! manager's error also carries `message`, its detail without the kind's
//! introduction, so a client can rebuild the same error.

use crate::{Error, ErrorKind};
use serde::Serialize;
use std::convert::Infallible;
use warp::http::StatusCode;
use warp::reject::Reject;
use warp::{Rejection, Reply};

/// A failed request, as a rejection our `recover` turns into JSON.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// From the manager.
    Manager(Error),
    /// Malformed request body or query.
    BadRequest(String),
    /// Body over the limit.
    TooLarge(u64),
    /// Missing or wrong bearer token.
    Unauthorized,
    /// A blocking task panicked or was cancelled.
    Internal(String),
    /// A `/fleet/` endpoint on a node without `WORKSPACE_FLEET`.
    FleetNotConfigured,
    /// A `/fleet/nodes/{node}/` endpoint for a node the fleet lacks.
    UnknownNode(String),
    /// The node a `/fleet/nodes/{node}/` request is for did not answer.
    NodeUnreachable(String),
    /// A `/hooks/` request on a node without `WORKSPACE_WEBHOOK_SECRET`.
    WebhooksNotConfigured,
    /// A `/hooks/` request whose `X-Hub-Signature-256` does not sign it.
    BadSignature,
}

impl Reject for ApiError {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    /// The kind's stable label.
    error: &'a str,
    /// For a person: what failed and what to do.
    detail: String,
    /// For a client: the manager error's message (see [`Error::message`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// HTTP status for a manager error: 500 only for real faults.
pub(crate) fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        // Both mean: the state of something else stands in the way.
        ErrorKind::InUse | ErrorKind::Rejected => StatusCode::CONFLICT,
        ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        // The remote repository failed us, not this server.
        ErrorKind::Git => StatusCode::BAD_GATEWAY,
        ErrorKind::Io | ErrorKind::Policy | ErrorKind::Config => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_error(status: StatusCode, error: &str, detail: String) -> warp::reply::Response {
    reply(
        status,
        ErrorBody {
            error,
            detail,
            message: None,
        },
    )
}

fn reply(status: StatusCode, body: ErrorBody<'_>) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// Turn every rejection into a JSON error.
pub(crate) async fn recover(rejection: Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(e) = rejection.find::<ApiError>() {
        return Ok(match e {
            ApiError::Manager(e) => reply(
                status_for(e.kind()),
                ErrorBody {
                    error: e.kind().as_str(),
                    detail: e.to_string(),
                    message: Some(e.message()),
                },
            ),
            ApiError::BadRequest(detail) => {
                json_error(StatusCode::BAD_REQUEST, "bad_request", detail.clone())
            }
            ApiError::TooLarge(limit) => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is over the limit of {limit} bytes"),
            ),
            ApiError::Unauthorized => {
                let mut r = json_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong bearer token: send `Authorization: Bearer <token>` (WORKSPACE_API_TOKEN)".into(),
                );
                r.headers_mut().insert(
                    warp::http::header::WWW_AUTHENTICATE,
                    warp::http::HeaderValue::from_static("Bearer"),
                );
                r
            }
            ApiError::Internal(detail) => json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                detail.clone(),
            ),
            ApiError::FleetNotConfigured => json_error(
                StatusCode::NOT_FOUND,
                "fleet_not_configured",
                "this node is not part of a fleet: set WORKSPACE_FLEET to the nodes \
                 (id=http://host:port,...), the same list the router uses"
                    .into(),
            ),
            ApiError::UnknownNode(id) => json_error(
                StatusCode::NOT_FOUND,
                "unknown_node",
                format!("{id:?} is not a node of this fleet; GET /fleet/health lists them"),
            ),
            ApiError::WebhooksNotConfigured => json_error(
                StatusCode::NOT_FOUND,
                "webhooks_not_configured",
                "push webhooks are off here: set WORKSPACE_WEBHOOK_SECRET to the secret the \
                 forge signs them with"
                    .into(),
            ),
            ApiError::BadSignature => json_error(
                StatusCode::UNAUTHORIZED,
                "bad_signature",
                "X-Hub-Signature-256 is missing or does not sign this body with the configured \
                 secret; check the webhook's secret (WORKSPACE_WEBHOOK_SECRET)"
                    .into(),
            ),
            ApiError::NodeUnreachable(detail) => json_error(
                StatusCode::BAD_GATEWAY,
                "node_unreachable",
                format!("{detail}; try again once it is back (GET /fleet/health)"),
            ),
        });
    }
    if rejection.is_not_found() {
        return Ok(json_error(
            StatusCode::NOT_FOUND,
            "no_route",
            "no such endpoint; see GET /openapi.json".into(),
        ));
    }
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        return Ok(json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this endpoint does not take that method; see GET /openapi.json".into(),
        ));
    }
    if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        return Ok(json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            e.to_string(),
        ));
    }
    Ok(json_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        format!("{rejection:?}"),
    ))
}
