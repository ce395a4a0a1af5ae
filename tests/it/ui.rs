//! The dashboard in a real browser (issue 16): Debian's chromium through
//! chromedriver, against the `serve` binary on loopback.

use crate::support::webdriver::Browser;
use crate::support::{Upstream, serve_local};
use serde_json::{Value, json};

const TOKEN: &str = "ui-token-0123456789abcdef";

#[test]
fn the_dashboard_signs_in_shows_workspaces_and_acts() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let mut served = serve_local(base.path(), TOKEN);
    let root = format!("http://{}", served.addr);
    let client = reqwest::blocking::Client::new();
    let api = |method: reqwest::Method, path: &str, body: Value| {
        let r = client
            .request(method, format!("{root}{path}"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or_default())
    };
    let prepare = |repo: &str, extra: Value| {
        let mut body = json!({"repo_full_name": repo, "clone_url": up.url(), "ref": "main"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, out) = api(reqwest::Method::POST, "/workspace/prepare", body);
        assert_eq!(status, 200, "{out}");
        out
    };

    // The page is served with a strict policy, and no inline script.
    let page = client.get(format!("{root}/ui/")).send().unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!page.text().unwrap().contains("<script>"));

    let demo = prepare("acme/demo", json!({}));
    let browser = Browser::start();
    browser.goto(&format!("{root}/ui"));
    browser.wait_for_text("#sign-in-title", "Sign in");

    // A wrong token is refused and the sign-in stays.
    let field = browser.find("#token").expect("the sign-in form");
    browser.type_into(&field, "not-the-token");
    browser.click(&browser.find("#sign-in-form button").unwrap());
    browser.wait_for_text("#sign-in-error", "not accepted");
    assert!(!browser.displayed(&browser.find("#dashboard").unwrap()));

    // The right one shows the dashboard with the workspace prepared above.
    let field = browser.find("#token").unwrap();
    browser.type_into(&field, TOKEN);
    browser.click(&browser.find("#sign-in-form button").unwrap());
    browser.wait_for_text("#workspace-rows", "acme/demo");
    browser.wait_for_text("#health-status", "healthy");
    browser.wait_for_text("#policy", "default policy");
    // A local clone borrows from no mirror; the disk line counts both kinds.
    browser.wait_for_text("#mirrors-text", "Object mirrors: 0 (0 not borrowed from)");
    browser.wait_for_text("#total-text", "mirrors 0 MB");
    browser.wait_for_text("#operation-rows", "prepare");
    assert_eq!(
        browser.script("return sessionStorage.length"),
        json!(1),
        "the token is kept in the tab's session storage"
    );

    // A leased workspace appears (live refresh) and its removal is a plain 409.
    let leased = prepare(
        "acme/leased",
        json!({"lease_seconds": 600, "holder": "scan-7"}),
    );
    browser.wait_for_text("#workspace-rows", "acme/leased");
    browser.wait_for_text("#workspace-rows", "leased by scan-7");
    let remove_leased = browser
        .find(&format!(
            "tr[data-name='{}'] button.remove",
            leased["name"].as_str().unwrap()
        ))
        .unwrap();
    browser.click(&remove_leased);
    browser.accept_dialog();
    browser.wait_for_text("#action-result", "Not removed: acme/leased is in use");

    // Removing the other one takes it off the table without a page load.
    let name = demo["name"].as_str().unwrap();
    let marker = browser.script("window.fixsecMarker = 42; return window.fixsecMarker");
    assert_eq!(marker, json!(42));
    browser.click(
        &browser
            .find(&format!("tr[data-name='{name}'] button.remove"))
            .unwrap(),
    );
    browser.accept_dialog();
    browser.wait_for_text("#action-result", "Removed acme/demo");
    browser.wait_gone(&format!("tr[data-name='{name}']"));
    assert!(!base.path().join(name).exists());
    assert_eq!(
        browser.script("return window.fixsecMarker"),
        json!(42),
        "the page reloaded"
    );

    // A cleanup at age 0 keeps the leased workspace.
    let age = browser.find("#cleanup-age").unwrap();
    browser.type_into(&age, "0");
    browser.click(&browser.find("#cleanup-form button").unwrap());
    browser.wait_for_text("#action-result", "Cleanup removed 0 workspace(s)");
    browser.wait_for_text("#workspace-rows", "acme/leased");

    let shot = browser.screenshot();
    assert!(shot.starts_with(b"\x89PNG"), "not a PNG");
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("dashboard.png"), &shot).unwrap();

    drop(browser);
    let _ = served.child.kill();
    let _ = served.child.wait();
}
