//! HTTPS on keygate's listeners: the key check and forwarding over
//! HTTP/1.1 and HTTP/2, client certificates with `clientCa`, and files
//! that cannot be used. Every certificate is made at test time.

mod common;

use std::time::Duration;

use common::tls::{
    client_config, https_request, path_text, Alpn, HttpsConn, Issued, PemDir, TestCa,
};
use common::traffic::{key_of, PUSH_BODY, PUSH_PATH};
use common::{api_key, ConfigBuilder, Gateway, MockBackend};

const FORBIDDEN_BODY: &str =
    "{\"status\":403,\"error\":\"Forbidden\",\"message\":\"Access denied\"}\n";

/// A CA, a server certificate for loopback signed by it, and their files.
struct ServerPki {
    ca: TestCa,
    dir: PemDir,
    server: Issued,
}

impl ServerPki {
    fn new() -> ServerPki {
        let ca = TestCa::new("keygate test CA");
        let server = ca.server(&["localhost", "127.0.0.1", "::1"]);
        ServerPki {
            ca,
            dir: PemDir::new(),
            server,
        }
    }

    /// Writes the server files and sets `gateway.tls` to them.
    fn configure(&self, builder: ConfigBuilder) -> ConfigBuilder {
        let cert = self.dir.write("server.pem", &self.server.cert_pem);
        let key = self.dir.write("server.key", &self.server.key_pem);
        builder
            .set_string("tls.cert", &path_text(&cert))
            .set_string("tls.key", &path_text(&key))
    }

    /// Also requires client certificates signed by `client_ca`.
    fn require_clients(&self, builder: ConfigBuilder, client_ca: &TestCa) -> ConfigBuilder {
        let clients = self.dir.write("clients.pem", &client_ca.cert_pem);
        self.configure(builder)
            .set_string("tls.clientCa", &path_text(&clients))
    }
}

fn push_headers(api_key: &str) -> Vec<(&str, &str)> {
    vec![("x-api-key", api_key), ("content-type", "application/json")]
}

fn check_good_and_bad_key(alpn: Alpn) {
    let mock = MockBackend::start();
    let pki = ServerPki::new();
    let builder = ConfigBuilder::new(mock.addr()).client("karolin", &key_of("karolin"));
    let gateway = Gateway::start(&pki.configure(builder).build());

    let good = api_key("karolin", &key_of("karolin"));
    let mut conn = HttpsConn::connect(
        gateway.addr(),
        "localhost",
        client_config(&pki.ca.cert_pem, alpn, None),
        alpn,
    )
    .unwrap_or_else(|err| panic!("HTTPS connect failed: {err}"));
    let expected_alpn: &[u8] = match alpn {
        Alpn::Http1 => b"http/1.1",
        Alpn::Http2 => b"h2",
    };
    assert_eq!(conn.alpn.as_deref(), Some(expected_alpn));

    let response = conn
        .send("POST", PUSH_PATH, &push_headers(&good), PUSH_BODY)
        .unwrap_or_else(|err| panic!("push with a good key failed: {err}"));
    assert_eq!(
        response.status,
        404,
        "the mock's own answer: {}",
        response.text()
    );
    assert!(
        response.text().contains("is not known"),
        "{}",
        response.text()
    );
    let expected_version = match alpn {
        Alpn::Http1 => http::Version::HTTP_11,
        Alpn::Http2 => http::Version::HTTP_2,
    };
    assert_eq!(response.version, expected_version);

    let received = mock.wait_for_requests(1, Duration::from_secs(5));
    let forwarded = &received[0];
    assert_eq!(forwarded.path(), PUSH_PATH);
    assert_eq!(forwarded.header("x-client-id"), Some("karolin"));
    assert_eq!(forwarded.header("x-forwarded-proto"), Some("https"));
    assert_eq!(forwarded.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(forwarded.header("x-request-id").is_some());
    assert_eq!(forwarded.body_length, PUSH_BODY.len() as u64);

    let wrong = api_key("karolin", "not-the-key");
    let refused = conn
        .send("POST", PUSH_PATH, &push_headers(&wrong), PUSH_BODY)
        .unwrap_or_else(|err| panic!("push with a bad key failed: {err}"));
    assert_eq!(refused.status, 403);
    assert_eq!(refused.text(), FORBIDDEN_BODY);

    // The same connection goes on after the 403.
    let again = conn
        .send("GET", "/nps/health", &[], b"")
        .unwrap_or_else(|err| panic!("request after the 403 failed: {err}"));
    assert_eq!(again.status, 200);
    assert_eq!(
        mock.requests().len(),
        1,
        "the refused push must not reach the backend"
    );
}

#[test]
fn https_http1_key_check() {
    check_good_and_bad_key(Alpn::Http1);
}

#[test]
fn https_http2_key_check() {
    check_good_and_bad_key(Alpn::Http2);
}

#[test]
fn http2_identity_per_request() {
    let mock = MockBackend::start();
    let pki = ServerPki::new();
    let builder = ConfigBuilder::new(mock.addr())
        .client("karolin", &key_of("karolin"))
        .client("other", &key_of("other"));
    let gateway = Gateway::start(&pki.configure(builder).build());
    let mut conn = HttpsConn::connect(
        gateway.addr(),
        "localhost",
        client_config(&pki.ca.cert_pem, Alpn::Http2, None),
        Alpn::Http2,
    )
    .unwrap_or_else(|err| panic!("HTTPS connect failed: {err}"));

    for client_id in ["karolin", "other", "karolin"] {
        let key = api_key(client_id, &key_of(client_id));
        let mut headers = push_headers(&key);
        // A client-sent identity is replaced, over HTTP/2 too.
        headers.push(("x-client-id", "admin"));
        headers.push(("x_client_id", "admin"));
        let response = conn
            .send("POST", PUSH_PATH, &headers, PUSH_BODY)
            .unwrap_or_else(|err| panic!("push of {client_id} failed: {err}"));
        assert_eq!(response.status, 404);
    }
    let received = mock.wait_for_requests(3, Duration::from_secs(5));
    let identities: Vec<Vec<&str>> = received
        .iter()
        .map(|request| {
            request
                .headers
                .iter()
                .filter(|(name, _)| name == "x-client-id" || name == "x_client_id")
                .map(|(_, value)| value.as_str())
                .collect()
        })
        .collect();
    assert_eq!(identities, [["karolin"], ["other"], ["karolin"]]);
}

#[test]
fn http2_large_refused_body_keeps_connection() {
    let mock = MockBackend::start();
    let pki = ServerPki::new();
    let builder = ConfigBuilder::new(mock.addr())
        .client("karolin", &key_of("karolin"))
        .set("limits.drainBodyMax", "1KiB");
    let gateway = Gateway::start(&pki.configure(builder).build());
    let mut conn = HttpsConn::connect(
        gateway.addr(),
        "localhost",
        client_config(&pki.ca.cert_pem, Alpn::Http2, None),
        Alpn::Http2,
    )
    .unwrap_or_else(|err| panic!("HTTPS connect failed: {err}"));

    let body = vec![b'x'; 200 * 1024];
    let wrong = api_key("karolin", "not-the-key");
    let started = std::time::Instant::now();
    let refused = conn
        .send("POST", PUSH_PATH, &push_headers(&wrong), &body)
        .unwrap_or_else(|err| panic!("push with a large body failed: {err}"));
    assert_eq!(refused.status, 403);
    assert_eq!(refused.text(), FORBIDDEN_BODY);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the 403 took {:?}",
        started.elapsed()
    );

    let good = api_key("karolin", &key_of("karolin"));
    let next = conn
        .send("POST", PUSH_PATH, &push_headers(&good), PUSH_BODY)
        .unwrap_or_else(|err| panic!("the connection did not survive the refused body: {err}"));
    assert_eq!(next.status, 404);
    let received = mock.wait_for_requests(1, Duration::from_secs(5));
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body_length, PUSH_BODY.len() as u64);
}

#[test]
fn client_certificate_required_with_client_ca() {
    let mock = MockBackend::start();
    let pki = ServerPki::new();
    let client_ca = TestCa::new("keygate test client CA");
    let builder = ConfigBuilder::new(mock.addr()).client("karolin", &key_of("karolin"));
    let gateway = Gateway::start(&pki.require_clients(builder, &client_ca).build());
    let good = api_key("karolin", &key_of("karolin"));
    let headers = push_headers(&good);

    let signed = client_ca.client("push-client");
    for alpn in [Alpn::Http1, Alpn::Http2] {
        let config = client_config(&pki.ca.cert_pem, alpn, Some(&signed));
        let response = https_request(gateway.addr(), config, alpn, "POST", PUSH_PATH, &headers)
            .unwrap_or_else(|err| {
                panic!("{alpn:?} with a signed client certificate failed: {err}")
            });
        assert_eq!(response.status, 404, "{alpn:?}: {}", response.text());
    }

    let stranger = TestCa::new("another CA").client("push-client");
    let expired = client_ca.expired_client("push-client");
    let cases: [(&str, Option<&Issued>); 3] = [
        ("no client certificate", None),
        ("a certificate from another CA", Some(&stranger)),
        ("an expired certificate", Some(&expired)),
    ];
    for (case, certificate) in cases {
        let config = client_config(&pki.ca.cert_pem, Alpn::Http1, certificate);
        let result = https_request(
            gateway.addr(),
            config,
            Alpn::Http1,
            "POST",
            PUSH_PATH,
            &headers,
        );
        assert!(
            result.is_err(),
            "{case}: the request went through: {result:?}"
        );
    }
    assert_eq!(
        mock.requests().len(),
        2,
        "only the two signed requests reach the backend"
    );
    assert!(
        gateway.wait_for_log("handshake", Duration::from_secs(5)),
        "no log line for the refused handshakes:\n{}",
        gateway.redacted_log_tail(30)
    );
    // The client sees a refused handshake before the gateway has logged it,
    // so each line gets its own wait.
    for reason in [
        "peer sent no certificates",
        "UnknownIssuer",
        "certificate expired",
    ] {
        assert!(
            gateway.wait_for_log(reason, Duration::from_secs(5)),
            "no handshake failure logged with {reason:?}:\n{}",
            gateway.redacted_log_tail(30)
        );
    }
}

#[test]
fn server_certificate_checked_by_client() {
    let mock = MockBackend::start();
    let pki = ServerPki::new();
    let gateway = Gateway::start(&pki.configure(ConfigBuilder::new(mock.addr())).build());

    let other_ca = TestCa::new("a CA keygate does not use");
    let config = client_config(&other_ca.cert_pem, Alpn::Http1, None);
    let err = https_request(
        gateway.addr(),
        config,
        Alpn::Http1,
        "GET",
        "/nps/health",
        &[],
    )
    .expect_err("a client that trusts another CA must refuse keygate");
    assert!(err.contains("UnknownIssuer"), "{err}");

    let config = client_config(&pki.ca.cert_pem, Alpn::Http1, None);
    let response = https_request(
        gateway.addr(),
        config,
        Alpn::Http1,
        "GET",
        "/nps/health",
        &[],
    )
    .unwrap_or_else(|err| panic!("health over HTTPS failed: {err}"));
    assert_eq!(response.status, 200);
}

#[test]
fn plain_http_to_tls_listener_fails() {
    let mock = MockBackend::start();
    let pki = ServerPki::new();
    let gateway = Gateway::start(&pki.configure(ConfigBuilder::new(mock.addr())).build());
    let result = common::http::try_request(gateway.addr(), "GET", "/nps/health", &[], b"");
    assert!(result.is_err() || result.is_ok_and(|response| response.status != 200));
}

#[test]
fn new_certificate_waits_for_restart() {
    let mock = MockBackend::start();
    let pki = ServerPki::new();
    let builder = pki.configure(ConfigBuilder::new(mock.addr()));
    let gateway = Gateway::start(&builder.build());

    // Replace the certificate files with one from another CA, then refresh.
    let new_ca = TestCa::new("replacement CA");
    let replacement = new_ca.server(&["localhost", "127.0.0.1"]);
    pki.dir.write("server.pem", &replacement.cert_pem);
    pki.dir.write("server.key", &replacement.key_pem);
    let config = client_config(&pki.ca.cert_pem, Alpn::Http1, None);
    let response = https_request(
        gateway.addr(),
        config,
        Alpn::Http1,
        "POST",
        "/nps/refresh",
        &[],
    )
    .unwrap_or_else(|err| panic!("refresh over HTTPS failed: {err}"));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text().trim(), "[\"gateway\"]");
    assert!(
        gateway.wait_for_log("gateway.tls", Duration::from_secs(5)),
        "the refresh must name gateway.tls as waiting for a restart:\n{}",
        gateway.redacted_log_tail(20)
    );

    // The running listener keeps the certificate it started with.
    let old = client_config(&pki.ca.cert_pem, Alpn::Http1, None);
    let response = https_request(gateway.addr(), old, Alpn::Http1, "GET", "/nps/health", &[])
        .unwrap_or_else(|err| panic!("the old certificate is no longer served: {err}"));
    assert_eq!(response.status, 200);
}

#[test]
fn unusable_files_are_config_errors() {
    let pki = ServerPki::new();
    let other = TestCa::new("other").server(&["localhost"]);
    let cert = pki.dir.write("server.pem", &pki.server.cert_pem);
    let key = pki.dir.write("server.key", &pki.server.key_pem);
    let other_key = pki.dir.write("other.key", &other.key_pem);
    let garbage = pki.dir.write("garbage.pem", "not a certificate\n");
    let missing = pki.dir.path().join("missing.pem");

    let cases = [
        ("tls.cert", missing.clone(), "gateway.tls.cert: cannot read"),
        ("tls.cert", garbage.clone(), "contains no PEM certificate"),
        ("tls.key", garbage.clone(), "contains no PEM private key"),
        ("tls.key", other_key.clone(), "does not fit the certificate"),
        ("tls.clientCa", garbage.clone(), "gateway.tls.clientCa"),
        (
            "upstreamCa",
            missing.clone(),
            "gateway.upstreamCa: cannot read",
        ),
    ];
    for (setting, path, expected) in cases {
        let text = ConfigBuilder::new(common::free_addr())
            .set_string("tls.cert", &path_text(&cert))
            .set_string("tls.key", &path_text(&key))
            .set_string(setting, &path_text(&path))
            .build();
        let (_dir, config_path) = common::gateway::write_config_file(&text);
        let config_arg = path_text(&config_path);

        let checked = Gateway::spawn_raw(&["check-config", "--config", &config_arg]);
        let stderr = String::from_utf8_lossy(&checked.stderr);
        assert_eq!(checked.status.code(), Some(1), "{setting}: {stderr}");
        assert!(stderr.contains(expected), "{setting}: {stderr}");
        assert!(
            stderr.contains(&path_text(&path)),
            "{setting}: the file is not named: {stderr}"
        );

        let started = Gateway::spawn_raw(&["--config", &config_arg]);
        let stderr = String::from_utf8_lossy(&started.stderr);
        assert_eq!(started.status.code(), Some(1), "{setting}: {stderr}");
        assert!(stderr.contains(expected), "{setting}: {stderr}");
    }

    // The key file's bytes never appear in an error.
    let text = ConfigBuilder::new(common::free_addr())
        .set_string("tls.cert", &path_text(&key))
        .set_string("tls.key", &path_text(&key))
        .build();
    let (_dir, config_path) = common::gateway::write_config_file(&text);
    let checked = Gateway::spawn_raw(&["check-config", "--config", &path_text(&config_path)]);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(1), "{stderr}");
    let key_body: String = pki.server.key_pem.lines().nth(1).unwrap_or("").to_owned();
    assert!(!key_body.is_empty());
    assert!(!stderr.contains(&key_body), "the error shows key material");
}

#[test]
fn check_config_summarises_tls() {
    let pki = ServerPki::new();
    let client_ca = TestCa::new("client CA");
    let text = pki
        .require_clients(ConfigBuilder::new(common::free_addr()), &client_ca)
        .build();
    let (_dir, config_path) = common::gateway::write_config_file(&text);
    let output = Gateway::spawn_raw(&["check-config", "--config", &path_text(&config_path)]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("client certificates required"), "{stdout}");

    let expired = pki.ca.expired_server(&["localhost"]);
    let cert = pki.dir.write("expired.pem", &expired.cert_pem);
    let key = pki.dir.write("expired.key", &expired.key_pem);
    let text = ConfigBuilder::new(common::free_addr())
        .set_string("tls.cert", &path_text(&cert))
        .set_string("tls.key", &path_text(&key))
        .build();
    let (_dir, config_path) = common::gateway::write_config_file(&text);
    let output = Gateway::spawn_raw(&["check-config", "--config", &path_text(&config_path)]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("warning: gateway.tls.cert"), "{stdout}");
    assert!(stdout.contains("expired"), "{stdout}");
}
