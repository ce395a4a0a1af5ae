//! Unit tests of the LFS client's pure parts.

use super::*;

fn oid() -> String {
    "0123456789abcdef".repeat(4)
}

fn pointer_text(oid: &str, size: &str) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n")
}

#[test]
fn pointers_parse_only_when_well_formed() {
    let good = Pointer {
        oid: oid(),
        size: 12345,
    };
    assert_eq!(
        parse_pointer(pointer_text(&oid(), "12345").as_bytes()),
        Some(good.clone())
    );
    // No final newline; keys in either order.
    let text = pointer_text(&oid(), "12345");
    assert_eq!(
        parse_pointer(text.trim_end().as_bytes()),
        Some(good.clone())
    );
    let swapped = format!(
        "version https://git-lfs.github.com/spec/v1\nsize 12345\noid sha256:{}\n",
        oid()
    );
    assert_eq!(parse_pointer(swapped.as_bytes()), Some(good));

    // Another version.
    let v2 = pointer_text(&oid(), "1").replace("spec/v1", "spec/v2");
    assert_eq!(parse_pointer(v2.as_bytes()), None);
    assert_eq!(parse_pointer(b"version x\n"), None);
    // Bad oids: short, long, upper case, not hex, another hash.
    for bad in [
        oid()[..63].to_string(),
        format!("{}0", oid()),
        oid().to_ascii_uppercase(),
        format!("{}g", &oid()[..63]),
    ] {
        assert_eq!(
            parse_pointer(pointer_text(&bad, "1").as_bytes()),
            None,
            "{bad}"
        );
    }
    let sha1 = pointer_text(&oid(), "1").replace("sha256:", "sha1:");
    assert_eq!(parse_pointer(sha1.as_bytes()), None);
    // Sizes that are not a plain number.
    for bad in [
        "12a",
        "-1",
        "",
        "+5",
        " 5",
        "1.5",
        "99999999999999999999999",
    ] {
        assert_eq!(
            parse_pointer(pointer_text(&oid(), bad).as_bytes()),
            None,
            "{bad:?}"
        );
    }
    // Missing, repeated or unknown keys.
    let no_size = format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\n",
        oid()
    );
    assert_eq!(parse_pointer(no_size.as_bytes()), None);
    let twice = format!("{}size 2\n", pointer_text(&oid(), "1"));
    assert_eq!(parse_pointer(twice.as_bytes()), None);
    let extension = format!("{}ext-0-foo sha256:{}\n", pointer_text(&oid(), "1"), oid());
    assert_eq!(parse_pointer(extension.as_bytes()), None);
    // Too long, whatever it holds.
    let long = format!("{}{}", pointer_text(&oid(), "1"), "x".repeat(POINTER_MAX));
    assert!(long.len() > POINTER_MAX);
    assert_eq!(parse_pointer(long.as_bytes()), None);
    assert_eq!(parse_pointer(&[0xff, 0xfe]), None);
}

#[test]
fn the_endpoint_is_the_clone_urls_own() {
    for (url, endpoint) in [
        (
            "https://git.example/o/r.git",
            "https://git.example/o/r.git/info/lfs",
        ),
        (
            "https://git.example/o/r",
            "https://git.example/o/r.git/info/lfs",
        ),
        (
            "https://git.example/o/r/",
            "https://git.example/o/r.git/info/lfs",
        ),
        (
            "https://git.example/o/r.git/",
            "https://git.example/o/r.git/info/lfs",
        ),
        ("http://h:8080/r", "http://h:8080/r.git/info/lfs"),
    ] {
        assert_eq!(lfs_endpoint(url), endpoint, "{url}");
    }
}

#[test]
fn the_credential_goes_only_to_the_clone_origin() {
    let clone = Url::parse("https://git.example/o/r.git").unwrap();
    let none = BTreeMap::new();
    let yes = |href: &str| credential_goes_to(&Url::parse(href).unwrap(), &clone, &none);
    assert!(yes("https://git.example/o/r.git/info/lfs/objects/batch"));
    assert!(yes("https://GIT.example:443/lfs/objects/abc?sig=1"));
    assert!(!yes("https://git.example:8443/lfs/objects/abc"));
    assert!(!yes("http://git.example/lfs/objects/abc"));
    assert!(!yes("https://other.example/lfs/objects/abc"));
    assert!(!yes("https://git.example.evil/lfs/objects/abc"));
    assert!(!yes("https://user:pw@git.example/lfs/objects/abc"));
    let href = Url::parse("https://git.example/lfs/objects/abc").unwrap();
    for name in ["Authorization", "authorization", "AUTHORIZATION"] {
        let mut own = BTreeMap::new();
        own.insert(
            name.to_string(),
            serde_json::Value::from("RemoteAuth token"),
        );
        assert!(!credential_goes_to(&href, &clone, &own), "{name}");
    }
    let mut other = BTreeMap::new();
    other.insert("X-Trace".to_string(), serde_json::Value::from("1"));
    assert!(credential_goes_to(&href, &clone, &other));
}

#[test]
fn server_headers_are_filtered() {
    for name in [
        "Host",
        "Content-Length",
        "transfer-encoding",
        "Connection",
        "Cookie",
        "Proxy-Authorization",
        "proxy-connection",
        "Keep-Alive",
    ] {
        assert!(action_header(name, "x").is_none(), "{name}");
    }
    // Names and values HTTP refuses are skipped, not errors.
    assert!(action_header("bad name", "x").is_none());
    assert!(action_header("", "x").is_none());
    assert!(action_header("X-Ok", "line\nbreak").is_none());
    let (name, value) = action_header("Authorization", "RemoteAuth abc").unwrap();
    assert_eq!(name.as_str(), "authorization");
    assert_eq!(value.to_str().unwrap(), "RemoteAuth abc");
    assert!(value.is_sensitive());
    let (name, _) = action_header("Metadata-Flavor", "Google").unwrap();
    assert_eq!(name.as_str(), "metadata-flavor");
}

#[test]
fn index_paths_stay_inside_the_working_tree() {
    assert_eq!(
        index_path(b"a/b.bin"),
        Some(PathBuf::from("a").join("b.bin"))
    );
    assert_eq!(
        index_path(b".gitattributes"),
        Some(PathBuf::from(".gitattributes"))
    );
    let bad: [&[u8]; 8] = [
        b"",
        b"/abs",
        b"a//b",
        b"../x",
        b"a/../x",
        b"./x",
        b".git/config",
        b"a/.GIT/x",
    ];
    for bad in bad {
        assert_eq!(index_path(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn shown_urls_carry_no_secret() {
    let url = Url::parse("https://u:p@git.example/o/r.git?token=t#f").unwrap();
    assert_eq!(shown_url(&url), "https://git.example/o/r.git");
    assert_eq!(host_of(&url), "git.example");
    let url = Url::parse("http://127.0.0.2:8080/x?sig=1").unwrap();
    assert_eq!(host_of(&url), "127.0.0.2:8080");
}
