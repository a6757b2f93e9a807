//! The :8081 listener's edges with the real `appliance serve`: an unknown path answers 404
//! (a gRPC call to an unknown method still gets grpc-status 12), and the boot routes' request
//! log names the path only, never the query string (which may carry a token).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::Appliance;

/// One HTTP/1.1 request; the response head (status line + headers, lower-cased) and body.
fn request(addr: SocketAddr, head: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{head}Host: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn unknown_paths_are_404_and_unknown_grpc_methods_unimplemented() {
    let app = Appliance::start();
    for path in [
        "/nope",
        "/favicon.ico",
        "/api/v2/things",
        "/appliance.admin.v1.Admin/Nope",
        "/api.Agent/CreateServer",
    ] {
        let (head, _) = request(app.addr, &format!("GET {path} HTTP/1.1\r\n"));
        assert!(head.starts_with("http/1.1 404"), "{path}: {head}");
        assert!(!head.contains("grpc-status"), "{path}: {head}");
    }
    // A gRPC call to a method nobody serves: UNIMPLEMENTED, as before.
    for path in ["/api.Agent/Nope", "/no.such.Service/Call", "/nope"] {
        let (head, _) = request(
            app.addr,
            &format!(
                "POST {path} HTTP/1.1\r\ncontent-type: application/grpc\r\ncontent-length: 0\r\n"
            ),
        );
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(head.contains("grpc-status: 12"), "{path}: {head}");
    }
    // Known routes are untouched.
    let (head, body) = request(app.addr, "GET /healthz HTTP/1.1\r\n");
    assert!(
        head.starts_with("http/1.1 200") && body == "ok\n",
        "{head}{body}"
    );
}

#[test]
fn boot_request_log_has_the_path_but_never_the_query() {
    let tmp = tempfile::tempdir().unwrap();
    let mut app = Appliance::start_custom(&tmp.path().join("data"), "", "info", &[]);
    for path in [
        "/ipxe?uuid=4c4c4544-0042-3010-8050-b4c04f4d4e31&mac=52:54:00:12:34:56&token=Leaky-Token-1",
        "/boot.ipxe?token=Leaky-Token-2",
        "/tftp/undionly.kpxe?token=Leaky-Token-3",
    ] {
        request(app.addr, &format!("GET {path} HTTP/1.1\r\n"));
    }
    let log = app.stop_and_log();
    for logged in [
        "HTTP GET /ipxe ",
        "HTTP GET /boot.ipxe ",
        "HTTP GET /tftp/undionly.kpxe ",
    ] {
        assert!(log.contains(logged), "{logged} missing: {log}");
    }
    assert!(!log.contains("Leaky-Token"), "query string logged: {log}");
    assert!(!log.contains("uuid=4c4c"), "query string logged: {log}");
}
