//! HTTPS: a client that trusts the test CA gets answers; plain HTTP to the TLS port
//! fails without harming the server; SIGHUP swaps in a new certificate.

mod common;

use std::path::Path;
use std::process::Command;

use common::certs::make_certificates;
use common::*;

/// `curl` exit status and body for `url`, trusting `ca`.
fn curl(url: &str, ca: Option<&Path>) -> (bool, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "--max-time", "5", url]);
    if let Some(ca) = ca {
        command.arg("--cacert").arg(ca);
    }
    let output = command.output().expect("curl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn https_serves_with_the_test_ca_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path();
    make_certificates(certs, "first");
    make_certificates(certs, "second");
    std::fs::copy(certs.join("first.pem"), certs.join("live.pem")).expect("copy");
    std::fs::copy(certs.join("first.key"), certs.join("live.key")).expect("copy");
    let cert = certs.join("live.pem").to_string_lossy().to_string();
    let key = certs.join("live.key").to_string_lossy().to_string();
    let log = certs.join("server.log");
    let server = Server::start_with(
        &certs.join("data"),
        &[],
        &["--tls-cert", &cert, "--tls-key", &key],
        Some(&log),
    );
    let https = server.base.replace("http://", "https://");
    let health = format!("{https}/healthz");

    let (ok, body) = curl(&health, Some(&certs.join("first-ca.pem")));
    assert!(ok, "HTTPS with the right CA works");
    assert_eq!(body.trim(), "ok");
    let (ok, _) = curl(&health, Some(&certs.join("second-ca.pem")));
    assert!(!ok, "a client that does not trust the CA is refused");
    let (ok, _) = curl(&format!("{}/healthz", server.base), None);
    assert!(!ok, "plain HTTP to the TLS port fails");
    let (ok, _) = curl(&health, Some(&certs.join("first-ca.pem")));
    assert!(ok, "the server still serves after a plain-HTTP attempt");

    // Rotate: new files, SIGHUP, new handshakes use the new certificate.
    std::fs::copy(certs.join("second.pem"), certs.join("live.pem")).expect("copy");
    std::fs::copy(certs.join("second.key"), certs.join("live.key")).expect("copy");
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    eventually("the new certificate to be served", || {
        match curl(&health, Some(&certs.join("second-ca.pem"))) {
            (true, _) => Ok(()),
            (false, _) => Err("the second CA is not trusted yet".to_string()),
        }
    });
    let (ok, _) = curl(&health, Some(&certs.join("first-ca.pem")));
    assert!(!ok, "the old certificate is no longer served");
    // A reload with a broken file keeps the current certificate.
    std::fs::write(certs.join("live.key"), "not a key").expect("write");
    let _ = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status();
    eventually("the server to report the failed reload", || {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if said.contains("TLS reload failed") {
            Ok(())
        } else {
            Err(format!("its log: {said}"))
        }
    });
    let (ok, _) = curl(&health, Some(&certs.join("second-ca.pem")));
    assert!(ok, "a failed reload keeps serving the previous certificate");
    let exit = server.stop();
    assert!(exit.success(), "graceful exit over TLS: {exit:?}");
}
