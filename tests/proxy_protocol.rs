//! LDAP behind HAProxy in TCP mode with `send-proxy-v2` and `send-proxy` (the PROXY protocol): entradir sees
//! the PBX's address, not the proxy's, so account networks decide by the client. HAProxy connects from its
//! own loopback address (127.0.0.3) while `ldapsearch` connects from 127.0.0.1, so the two can be told apart.
//! A proxy listed in `ldap.proxy_protocol_from` that does not send the header is turned away; clients that
//! are not listed proxies are served as before.

mod common;

use common::binary::{config_head, free_port, haproxy, password_hash, run_ready, start_sim, wait_for, Proc};
use std::process::{Command, Stdio};
use std::time::Duration;

const BASE: &str = "DC=contoso,DC=example";

/// `ldapsearch` bound as `account` through `port`: the cn lines it printed, or its error.
fn search(port: u16, account: &str, filter: &str) -> Result<Vec<String>, String> {
    let out = Command::new("ldapsearch")
        .args([
            "-x",
            "-LLL",
            "-o",
            "nettimeout=10",
            "-H",
            &format!("ldap://127.0.0.1:{port}"),
        ])
        .args([
            "-b",
            BASE,
            "-D",
            &format!("CN={account},CN=Users,{BASE}"),
            "-w",
            "proxy-secret",
        ])
        .args([filter, "cn"])
        .output()
        .expect("ldapsearch (ldap-utils) is installed");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("cn: "))
        .map(str::to_string)
        .collect())
}

#[test]
fn ldap_behind_haproxy_sees_the_client_through_the_proxy_protocol() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    std::fs::write(dir.join("secret"), "demo-secret\n").unwrap();
    let (_sim, sim_port) = start_sim(30, 2, 0, 8);
    let (ldap, admin) = (free_port(), free_port());
    let hash = password_hash("proxy-secret");
    let cfg = config_head(dir, sim_port, "", "")
        + &format!(
            r#"[ldap]
listen = "127.0.0.1:{ldap}"
proxy_protocol_from = ["127.0.0.3"]

[admin]
listen = "127.0.0.1:{admin}"

# Only from the PBX's address: through the proxy this works only if entradir learns it.
[[accounts]]
name = "pbx"
password_hash = "{hash}"
networks = ["127.0.0.1/32"]

# Only from the proxy's address: must not work through it, as the client is someone else.
[[accounts]]
name = "proxyonly"
password_hash = "{hash}"
networks = ["127.0.0.3/32"]
"#
        );
    let cfg_path = dir.join("entradir.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let _server: Proc = run_ready(&cfg_path, admin);

    let (v2, v1, plain) = (free_port(), free_port(), free_port());
    let mut ha =
        String::from("defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n");
    for (name, port, send) in [
        ("v2", v2, " send-proxy-v2"),
        ("v1", v1, " send-proxy"),
        ("plain", plain, ""),
    ] {
        ha += &format!(
            "frontend {name}\n  bind 127.0.0.1:{port}\n  default_backend {name}\nbackend {name}\n  server e \
             127.0.0.1:{ldap}{send} source 127.0.0.3\n"
        );
    }
    let ha_path = dir.join("haproxy.cfg");
    std::fs::write(&ha_path, ha).unwrap();
    let check = haproxy()
        .args(["-c", "-f"])
        .arg(&ha_path)
        .output()
        .expect("haproxy is installed");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let _ha = Proc(
        haproxy()
            .args(["-db", "-f"])
            .arg(&ha_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("haproxy to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", v2)).is_ok()
    });

    let everyone = search(ldap, "pbx", "(objectCategory=person)").expect("directly from 127.0.0.1");
    assert!(everyone.len() > 10, "{everyone:?}");
    for port in [v2, v1] {
        // The PBX's own network: allowed, the same answer as directly.
        let through = search(port, "pbx", "(objectCategory=person)").unwrap_or_else(|e| panic!("{port}: {e}"));
        assert_eq!(through, everyone);
        // The proxy's network: the client is not the proxy, so no.
        let e = search(port, "proxyonly", "(objectCategory=person)").unwrap_err();
        assert!(e.contains("Invalid credentials") || e.contains("(49)"), "{e}");
    }
    // A listed proxy that sends no header: its bytes are not taken for one, the connection is closed.
    let e = search(plain, "pbx", "(objectCategory=person)").unwrap_err();
    assert!(e.contains("Can't contact LDAP server") || e.contains("(-1)"), "{e}");
    // Direct clients are unaffected, also from the proxy's address range when not through the proxy.
    assert!(
        search(ldap, "proxyonly", "(cn=*)").is_err(),
        "127.0.0.1 is not the proxy's network"
    );
}
