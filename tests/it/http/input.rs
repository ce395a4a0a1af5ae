//! What a caller can get wrong: no token, a wrong one, bad JSON, unknown
//! fields, unsafe URLs and names; each a clear 4xx that loses nothing.

use super::*;

#[test]
fn every_protected_endpoint_wants_the_token() {
    let s = TestServer::start();
    let endpoints = [
        ("GET", "/workspace/stats"),
        ("POST", "/workspace/cleanup"),
        ("POST", "/workspace/prepare"),
        ("GET", "/workspace/workspaces"),
        ("GET", "/workspace/workspaces/x_12345678"),
        ("DELETE", "/workspace/workspaces/x_12345678"),
        ("DELETE", "/workspace/leases/7"),
        ("POST", "/workspace/policy/reload"),
    ];
    for (method, path) in endpoints {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic dGVzdA=="),
            Some(TOKEN),
        ] {
            let mut req = s
                .client
                .request(method.parse().unwrap(), format!("{}{path}", s.url));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {auth:?}"
            );
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let body: Value = resp.json().unwrap();
            assert_eq!(body["error"], "unauthorized");
            assert!(body["detail"].as_str().unwrap().contains("Bearer"));
        }
    }
}

#[test]
fn bad_input_gets_clear_4xx_and_loses_nothing() {
    let up = Upstream::new();
    let s = TestServer::start();
    let (_, prep) = s.prepare("acme/demo", &up.url());
    let name = prep["name"].as_str().unwrap().to_string();

    let cases: Vec<(RequestBuilder, StatusCode, &str)> = vec![
        (
            s.post("/workspace/prepare").body("{not json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.post("/workspace/prepare")
                .json(&json!({"clone_url": "x"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.post("/workspace/prepare")
                .json(&json!({"repo_full_name": "a/b", "clone_url": up.url(), "typo": 1})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.post("/workspace/prepare")
                .json(&json!({"repo_full_name": "a/b", "clone_url": "ext::sh -c id"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
        ),
        (
            s.post("/workspace/prepare")
                .json(&json!({"repo_full_name": "", "clone_url": up.url()})),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            s.post("/workspace/prepare").json(
                &json!({"repo_full_name": "a/b", "clone_url": up.url(), "default_branch": "nope"}),
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            s.post("/workspace/prepare")
                .json(&json!({"repo_full_name": "a/b", "clone_url": "git://127.0.0.1:1/x"})),
            StatusCode::BAD_GATEWAY,
            "git",
        ),
        (
            s.post("/workspace/cleanup").body("[1,2"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.post("/workspace/cleanup?max_age_hours=soon"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.post("/workspace/cleanup?max_age_hours=-1"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            s.post("/workspace/prepare").body(vec![b' '; 5000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            s.get("/workspace/workspaces/nope_12345678"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            s.get("/workspace/workspaces/..%2Fescape"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
        ),
        (
            s.delete("/workspace/workspaces/nope_12345678"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            s.get("/workspace/nothing-here"),
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        (
            s.client.put(format!("{}/workspace/health", s.url)),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (req, status, error) in cases {
        let (got, body) = send(req);
        assert_eq!(
            (got, body["error"].as_str().unwrap()),
            (status, error),
            "{body}"
        );
        assert!(!body["detail"].as_str().unwrap().is_empty());
    }
    // The workspace prepared first is still whole.
    let (status, ws) = send(s.get(&format!("/workspace/workspaces/{name}")));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ws["repo_full_name"], "acme/demo");
    assert!(
        s.manager
            .base_path()
            .join(&name)
            .join("repo/README.md")
            .is_file()
    );
}

/// Found by the API fuzzer: an id past u64 fell through to "method not
/// allowed". Any id no prepare could have returned is no lease: 404.
#[test]
fn a_lease_id_no_prepare_could_return_is_404() {
    let s = TestServer::start();
    for id in ["18446744073709551616", "abc", "-1", "7"] {
        let (status, body) = send(
            s.client
                .delete(format!("{}/workspace/leases/{id}", s.url))
                .bearer_auth(TOKEN),
        );
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
        assert_eq!(body["error"], "not_found", "{id}");
    }
}
