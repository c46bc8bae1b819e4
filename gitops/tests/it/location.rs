//! Where source URLs point, what a strict policy refuses, and the git
//! cache's own defences (no off-site redirects, private files).

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;

use gitops::location::non_public;
use gitops::{parse_location, read_git, GitSource, Location, LocationError, SourcePolicy};

use crate::support::{manifest, Remote};

fn remote(scheme: &'static str, host: &str, port: u16) -> Location {
    Location::Remote {
        scheme,
        host: host.to_owned(),
        port,
    }
}

#[test]
fn urls_are_read_as_libgit2_chooses_its_transport() {
    let cases = [
        ("/srv/repo.git", Location::Local),
        ("./repo", Location::Local),
        ("repo", Location::Local),
        ("file:///srv/repo.git", Location::Local),
        (
            "https://github.com/o/r.git",
            remote("https", "github.com", 443),
        ),
        (
            "http://example.org:8080/r",
            remote("http", "example.org", 8080),
        ),
        (
            "https://user:tok@example.org/r",
            remote("https", "example.org", 443),
        ),
        (
            "ssh://git@example.org:2222/r",
            remote("ssh", "example.org", 2222),
        ),
        ("git+ssh://example.org/r", remote("ssh", "example.org", 22)),
        ("git://example.org/r", remote("git", "example.org", 9418)),
        ("git@example.org:o/r.git", remote("ssh", "example.org", 22)),
        ("example.org:r.git", remote("ssh", "example.org", 22)),
        (
            "https://[2001:4860::1]:8443/r",
            remote("https", "2001:4860::1", 8443),
        ),
    ];
    for (url, want) in cases {
        assert_eq!(parse_location(url).unwrap(), want, "{url}");
    }
}

#[test]
fn ambiguous_urls_are_refused_not_guessed() {
    for url in [
        "",
        "ftp://example.org/r",
        "HTTPS://example.org/r",
        "FILE:///etc",
        "https://%31%32%37.0.0.1/r",
        "https://evil.example#@127.0.0.1/r",
        "https://a@b@127.0.0.1/r",
        "https://evil.example\\@127.0.0.1/r",
        "https://example.org:0/r",
        "https://example.org:99999/r",
        "https://example.org:80x/r",
        "https://[127.0.0.1]/r",
        "https:///r",
        "ssh://[::1/r",
        "[::1]:r",
        "user@[::1]:r",
        "us er@example.org:r",
        "https://example.org/a b",
        // libgit2 reads any ':' as [user@]host:path, even after a '/':
        // this would be an ssh connection to 127.0.0.1 as user "a/b".
        "a/b@127.0.0.1:x",
        "/srv/repo:1",
    ] {
        match parse_location(url) {
            Err(LocationError::Invalid(_)) => {}
            other => panic!("{url:?}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn non_public_addresses_are_named() {
    let cases = [
        ("127.0.0.1", Some("loopback")),
        ("127.255.0.9", Some("loopback")),
        ("0.0.0.0", Some("this network")),
        ("10.1.2.3", Some("private")),
        ("172.31.255.255", Some("private")),
        ("172.32.0.1", None),
        ("192.168.1.1", Some("private")),
        ("100.64.0.1", Some("shared address space (CGNAT)")),
        ("100.128.0.1", None),
        ("169.254.169.254", Some("link-local")),
        ("224.0.0.251", Some("multicast")),
        ("255.255.255.255", Some("reserved")),
        ("198.18.0.1", Some("benchmarking")),
        ("8.8.8.8", None),
        ("140.82.121.4", None),
        ("::", Some("unspecified")),
        ("::1", Some("loopback")),
        ("::ffff:127.0.0.1", Some("loopback")),
        ("::ffff:10.0.0.1", Some("private")),
        ("::ffff:8.8.8.8", None),
        ("::127.0.0.1", Some("IPv4-compatible")),
        ("64:ff9b::a00:1", Some("private")),
        ("64:ff9b::808:808", None),
        ("2002:7f00:1::", Some("loopback")),
        ("2002:808:808::", None),
        ("fc00::1", Some("unique local")),
        ("fd12:3456::1", Some("unique local")),
        ("fe80::1", Some("link-local")),
        ("ff02::1", Some("multicast")),
        ("2001:db8::1", Some("documentation")),
        ("2001::1", Some("IETF protocol assignment")),
        ("2001:4860:4860::8888", None),
        ("2606:4700::1111", None),
    ];
    for (ip, want) in cases {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(non_public(ip), want, "{ip}");
    }
}

#[test]
fn a_strict_policy_refuses_local_paths_and_private_hosts() {
    let strict = SourcePolicy::default();
    for url in ["/srv/repo.git", "file:///srv/repo.git", "relative/dir"] {
        assert!(
            matches!(strict.check(url), Err(LocationError::LocalNotAllowed)),
            "{url}"
        );
    }
    // Numeric forms the resolver reads as 127.0.0.1; names from /etc/hosts.
    for url in [
        "https://127.0.0.1:8443/x.git",
        "https://localhost/x.git",
        "https://[::1]/x.git",
        "https://[::ffff:127.0.0.1]/x.git",
        "http://2130706433/x.git",
        "http://0x7f.0.0.1/x.git",
        "http://127.1/x.git",
        "http://0/x.git",
        "https://169.254.169.254/latest",
        "https://10.0.0.1/x.git",
        "https://100.64.1.1/x.git",
        "https://[fd00::1]/x.git",
        "git://224.0.0.1/x.git",
        "ssh://git@localhost:2222/x.git",
        "git@127.0.0.1:x.git",
    ] {
        match strict.check(url) {
            Err(LocationError::NotPublic { host, detail }) => {
                let shown = LocationError::NotPublic {
                    host: host.clone(),
                    detail: String::new(),
                }
                .to_string();
                assert!(!shown.contains("loopback"), "{shown}");
                assert!(detail.contains("resolves to"), "{url}: {detail}");
            }
            other => panic!("{url}: expected NotPublic, got {other:?}"),
        }
    }
    // A public address literal needs no lookup and passes.
    assert!(strict.check("https://140.82.121.4/o/r.git").is_ok());
    let open = SourcePolicy::allow_all();
    assert_eq!(open.check("/srv/repo.git").unwrap(), Location::Local);
    assert!(open.check("https://127.0.0.1:1/x.git").is_ok());
}

/// An HTTP server on 127.0.0.1 that reads each request's headers and
/// answers every one with `response`.
fn http_server(response: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

/// Answers every request with a redirect to `location`.
fn redirecting_server(location: String) -> u16 {
    http_server(format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ))
}

#[test]
fn a_redirect_to_another_host_is_not_followed() {
    // The redirect's target, another host name for this machine: it notes
    // any connection (before answering, so a fetch that followed the
    // redirect returns only after the note is taken).
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_port = target.local_addr().unwrap().port();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noted = reached.clone();
    std::thread::spawn(move || {
        for stream in target.incoming() {
            let Ok(mut stream) = stream else { return };
            noted.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let port = redirecting_server(format!(
        "http://localhost:{target_port}/x.git/info/refs?service=git-upload-pack"
    ));
    let root = tempfile::tempdir().unwrap();
    let err = read_git(
        &GitSource {
            url: format!("http://127.0.0.1:{port}/x.git"),
            reference: "main".into(),
            path: String::new(),
        },
        &root.path().join("cache"),
    )
    .unwrap_err();
    assert!(
        !reached.load(std::sync::atomic::Ordering::SeqCst),
        "the redirect was followed: {err}"
    );
    assert!(
        err.to_string().contains("cannot redirect"),
        "refused as a redirect: {err}"
    );
}

/// Asks every request for credentials.
fn server_asking_for_credentials() -> u16 {
    http_server(
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
            .to_owned(),
    )
}

#[test]
fn a_control_plane_lends_its_own_credentials_only_when_allowed() {
    let port = server_asking_for_credentials();
    let source = GitSource {
        url: format!("http://127.0.0.1:{port}/private.git"),
        reference: "main".into(),
        path: String::new(),
    };
    let root = tempfile::tempdir().unwrap();
    let refused = gitops::GitCache::open(&root.path().join("a"))
        .unwrap()
        .lending_credentials(false)
        .fetch(&source)
        .unwrap_err();
    assert!(
        refused.to_string().contains("lends none of its own"),
        "{refused}"
    );
    let lent = gitops::GitCache::open(&root.path().join("b"))
        .unwrap()
        .fetch(&source)
        .unwrap_err();
    assert!(!lent.to_string().contains("lends none"), "{lent}");
    assert!(!SourcePolicy::default().allow_server_credentials);
    assert!(SourcePolicy::allow_all().allow_server_credentials);
}

#[test]
fn the_cache_is_readable_by_its_owner_only() {
    let root = tempfile::tempdir().unwrap();
    let remote = Remote::new(root.path());
    remote.push(&[("a.yaml", &manifest("a", ""))], &[], "add a");
    let cache = root.path().join("caches/acme/prod");
    read_git(
        &GitSource {
            url: remote.url(),
            reference: "main".into(),
            path: String::new(),
        },
        &cache,
    )
    .unwrap();
    let mut pending = vec![root.path().join("caches")];
    let mut seen = 0;
    while let Some(p) = pending.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", p.display());
            pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        seen += 1;
    }
    assert!(seen > 10, "walked the cache ({seen} entries)");
}

#[test]
fn create_private_dir_tightens_an_existing_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    gitops::create_private_dir(&dir).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}
