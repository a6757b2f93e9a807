//! The real `appliance serve` with SideroLink on (loopback, a free UDP port): Provision is
//! served on the :8081 listener and answers an unallocated node NOT_FOUND as Sidero does,
//! the WireGuard UDP port is bound, and the identity (server key, prefix) is created once
//! and kept across a restart.

mod support;

use appliance_rpc::siderolink::ProvisionRequest;
use appliance_rpc::siderolink::provision_service_client::ProvisionServiceClient;

/// The log without terminal colour sequences.
fn plain(log: &str) -> String {
    let mut out = String::new();
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn up_line(log: &str) -> String {
    plain(log)
        .lines()
        .find(|l| l.contains("SideroLink up"))
        .unwrap_or_else(|| panic!("no `SideroLink up` in the log: {log}"))
        .to_string()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("{key} in {line}"));
    line[at + key.len() + 1..]
        .split_whitespace()
        .next()
        .unwrap()
}

#[tokio::test]
async fn provision_is_served_and_the_identity_persists() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = format!("[siderolink]\nlisten = \"127.0.0.1:{port}\"\n");
    let first = {
        let a = support::Appliance::start_custom(&data, &config, "info", &[]);
        let mut client = ProvisionServiceClient::connect(format!("http://{}", a.addr))
            .await
            .unwrap();
        let e = client
            .provision(ProvisionRequest {
                node_uuid: "not-allocated".into(),
                node_public_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        assert!(
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
            "the WireGuard port is not bound"
        );
        up_line(&a.log())
    };
    let again = support::Appliance::start_custom(&data, &config, "info", &[]);
    let second = up_line(&again.log());
    assert_eq!(field(&first, "public_key"), field(&second, "public_key"));
    assert_eq!(field(&first, "prefix"), field(&second, "prefix"));
}
