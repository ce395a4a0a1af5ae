//! Unit tests of [`super`] (clone URL parsing and checks).

use super::*;
use crate::ErrorKind;

#[test]
fn strips_token_and_password() {
    let u = CloneUrl::parse("https://user:s3cr%40t@github.com/o/r.git", false).unwrap();
    assert_eq!(u.public, "https://github.com/o/r.git");
    let c = u.credentials.unwrap();
    assert_eq!((c.username.as_str(), c.secret.as_str()), ("user", "s3cr@t"));
    assert!(!format!("{c:?}").contains("s3cr"));

    let u = CloneUrl::parse("https://ghp_TOKEN@github.com/o/r", false).unwrap();
    assert_eq!(u.public, "https://github.com/o/r");
    assert_eq!(u.credentials.unwrap().username, "ghp_TOKEN");
}

#[test]
fn accepts_known_safe_transports() {
    for ok in [
        "https://github.com/o/r.git",
        "http://127.0.0.1:9/o/r",
        "git://127.0.0.1/r.git",
        "ssh://git@github.com/o/r.git",
        "git@github.com:o/r.git",
    ] {
        let u = CloneUrl::parse(ok, false).unwrap();
        assert!(u.credentials.is_none(), "{ok}");
        assert_eq!(u.public, ok);
    }
    let http = CloneUrl::parse("http://u:p@h/r", false).unwrap();
    assert!(http.credentials_in_clear());
}

#[test]
fn refuses_dangerous_and_local() {
    for (bad, kind) in [
        ("ext::sh -c touch% /tmp/pwned", ErrorKind::Refused),
        ("fd::17", ErrorKind::Refused),
        ("--upload-pack=touch /tmp/x", ErrorKind::Refused),
        ("-oProxyCommand=x", ErrorKind::Refused),
        ("ftp://h/r", ErrorKind::Refused),
        ("file:///tmp/r", ErrorKind::Refused),
        ("/tmp/r", ErrorKind::Refused),
        ("./r", ErrorKind::Refused),
        ("", ErrorKind::InvalidInput),
        ("https://", ErrorKind::InvalidInput),
        ("https://[::1/x", ErrorKind::InvalidInput),
    ] {
        let err = CloneUrl::parse(bad, false).unwrap_err();
        assert_eq!(err.kind(), kind, "{bad}: {err}");
    }
}

#[test]
fn hosts_outside_the_allow_list_are_refused() {
    let allowed = vec!["github.com".to_string(), ".corp.example".to_string()];
    for ok in [
        "https://github.com/o/r.git",
        "git@github.com:o/r.git",
        "https://git.corp.example/o/r",
    ] {
        CloneUrl::parse(ok, false)
            .unwrap()
            .check_host(&allowed)
            .unwrap();
    }
    for bad in [
        "https://evil.com/o/r",
        "https://github.com.evil.com/o/r",
        "ssh://git@10.0.0.1/r",
        "git@internal:o/r.git",
    ] {
        let err = CloneUrl::parse(bad, false)
            .unwrap()
            .check_host(&allowed)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused, "{bad}");
    }
    CloneUrl::parse("https://anything/r", false)
        .unwrap()
        .check_host(&[])
        .unwrap();
}

#[test]
fn authorities_git_reads_differently_are_refused() {
    let allowed = vec![
        "allowed.example".to_string(),
        ".allowed.example".to_string(),
    ];
    for bad in [
        "git://allowed.example?@127.0.0.1:9418/r.git",
        "git://allowed.example#@127.0.0.1:9418/r.git",
        "git://127.0.0.1%00.allowed.example/r.git",
        "ssh://allowed.example?@127.0.0.1/r.git",
        "ssh://git@allowed.example#@127.0.0.1/r.git",
        "ssh://a@b@allowed.example/r.git",
        "https://allowed.example%2f@127.0.0.1/r.git",
        "http://allowed.example\\@127.0.0.1/r.git",
    ] {
        let verdict = CloneUrl::parse(bad, false).and_then(|u| u.check_host(&allowed));
        let err = verdict.expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::Refused, "{bad}: {err}");
    }
    // The same hosts written plainly still pass, and queries after the
    // path are no business of the host check.
    for ok in [
        "git://allowed.example/r.git",
        "ssh://git@allowed.example:2222/r.git",
        "https://x.allowed.example/r.git?ref=main",
    ] {
        let u = CloneUrl::parse(ok, false).unwrap();
        u.check_host(&allowed).unwrap();
    }
    // scp-like with odd characters in the host is not taken as ssh.
    assert!(CloneUrl::parse("git@127.0.0.1%00.allowed.example:r.git", false).is_err());
}

#[test]
fn private_addresses_are_refused_unless_allowed() {
    for bad in [
        "git://127.0.0.1:9/r.git",
        "http://169.254.169.254/latest/meta-data",
        "https://10.1.2.3/r.git",
        "ssh://git@[::1]/r.git",
        "https://[::ffff:192.168.0.1]/r.git",
        "git://localhost/r.git",
        "https://100.64.0.1/r.git",
        "https://[fd00::1]/r.git",
        "https://0.0.0.0/r.git",
    ] {
        let u = CloneUrl::parse(bad, false).unwrap();
        let err = u.check_addresses(false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused, "{bad}: {err}");
        assert!(err.to_string().contains("WORKSPACE_ALLOW_PRIVATE_NETWORKS"));
        u.check_addresses(true).unwrap();
    }
    for public in ["8.8.8.8", "2606:4700::1111", "140.82.112.3"] {
        assert!(is_public(public.parse().unwrap()), "{public}");
    }
}

#[test]
fn a_refused_transport_never_echoes_a_credential() {
    let err = CloneUrl::parse("x-access-token:SECRET@host::r", false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(!err.to_string().contains("SECRET"), "{err}");
    let err = CloneUrl::parse("ext::sh -c x", false).unwrap_err();
    assert!(err.to_string().contains("`ext::`"), "{err}");
}

#[test]
fn local_only_when_allowed() {
    let u = CloneUrl::parse("/tmp/r", true).unwrap();
    assert_eq!(u.transport, Transport::Local);
    // Made absolute: on Windows that adds the current drive (`C:\tmp\r`).
    let expected = std::path::absolute("/tmp/r").unwrap();
    assert_eq!(u.public, expected.to_string_lossy());
    let u = CloneUrl::parse("file:///tmp/r", true).unwrap();
    assert_eq!(u.transport, Transport::Local);
}
