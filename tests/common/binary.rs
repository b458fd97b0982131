//! The shipped binary as a child process: `entradir graph-sim` and `entradir run`, free ports, waiting.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_entradir");

/// A child process that is killed when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free now, below the kernel's ephemeral range: a port from that range (what binding `:0` gives) can
/// be taken meanwhile by any outgoing connection of any process, and then a server told to listen there (a
/// reload that moves a listener, a restart) finds it in use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = range.split_whitespace().filter_map(|p| p.parse::<u32>().ok());
    let (low, high) = (bounds.next().unwrap_or(32768), bounds.next().unwrap_or(60999));
    // Below the range when there is room, else above it; with neither, what the kernel gives.
    let (first, span) = if low >= 12_000 {
        (10_000, low - 10_000)
    } else if high <= 63_000 {
        (high + 1, 65_535 - high)
    } else {
        (0, 0)
    };
    // Spread test processes running at once over the span; within one, count up.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % span.max(1);
    for _ in 0..span {
        let port = first + (start + NEXT.fetch_add(1, Ordering::Relaxed) % span) % span;
        let Ok(port) = u16::try_from(port) else { continue };
        let free = ["127.0.0.1", "0.0.0.0"]
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok());
        if free {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `entradir graph-sim` on a free port with a tenant of `users` users; waits until it listens.
pub fn start_sim(users: usize, groups: usize, devices: usize, seed: u64) -> (Proc, u16) {
    start_sim_with(users, groups, devices, seed, &[])
}

/// [`start_sim`] with more `entradir graph-sim` flags.
///
/// Ready means the simulator answered HTTP, not merely that something accepted a connection on the port; a
/// simulator that exits first (its port taken meanwhile) is started again on another port.
pub fn start_sim_with(users: usize, groups: usize, devices: usize, seed: u64, flags: &[&str]) -> (Proc, u16) {
    let mut exits = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut sim = Proc(
            Command::new(BIN)
                .args(["graph-sim", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--users", &users.to_string(), "--groups", &groups.to_string()])
                .args(["--devices", &devices.to_string(), "--seed", &seed.to_string()])
                .args(flags)
                .stdout(Stdio::null())
                .stderr(log.reopen().unwrap())
                .spawn()
                .unwrap(),
        );
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = sim.0.try_wait() {
                let said = std::fs::read_to_string(log.path()).unwrap_or_default();
                exits.push(format!("port {port}: {status}: {}", said.trim()));
                break;
            }
            if sim_answers(port) {
                return (sim, port);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "graph-sim on port {port} did not answer HTTP within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("graph-sim exited before it answered: {exits:?}");
}

/// Whether `GET /_sim/` on `port` gets the simulator's 200.
fn sim_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /_sim/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// HAProxy from Debian's package: in /usr/sbin, which a non-root user's PATH may not hold.
pub fn haproxy() -> Command {
    let sbin = Path::new("/usr/sbin/haproxy");
    Command::new(if sbin.exists() { sbin } else { Path::new("haproxy") })
}

/// `entradir run --config <config>`, its output discarded, logging at `warn`.
pub fn run_server(config: &Path) -> Proc {
    Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("ENTRADIR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// [`run_server`], returned once its admin listener on `admin` says `/readyz` 200.
pub fn run_ready(config: &Path, admin: u16) -> Proc {
    let proc = run_server(config);
    wait_for("the server to be ready", Duration::from_secs(60), || {
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &format!("http://127.0.0.1:{admin}/readyz")])
            .status()
            .is_ok_and(|s| s.success())
    });
    proc
}

/// SIGHUP, as an admin reloads.
pub fn sighup(p: &Proc) {
    let ok = Command::new("kill")
        .args(["-HUP", &p.0.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -HUP {}", p.0.id());
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// An argon2 PHC hash of `password`, made by `entradir hash-password` as an admin would.
pub fn password_hash(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "hash-password");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2"), "{hash}");
    hash
}

/// The `[entra]` and `[directory]` sections of a config for the simulator on `sim`, with the secret at
/// `dir/secret` and the state in `dir/state`; `entra` and `directory` are extra lines for each section.
pub fn config_head(dir: &Path, sim: u16, entra: &str, directory: &str) -> String {
    format!(
        r#"[entra]
tenant_id = "00000000-0000-4000-8000-000000000001"
client_id = "entradir-demo"
client_secret_file = "{secret}"
authority = "http://127.0.0.1:{sim}"
graph_url = "http://127.0.0.1:{sim}"
sync_interval = "1h"
{entra}
[directory]
base_dn = "DC=contoso,DC=example"
state_dir = "{state}"
default_country = "DE"
{directory}
"#,
        secret = dir.join("secret").display(),
        state = dir.join("state").display(),
    )
}

/// `ldapsearch` on loopback under the test tenant's base DN, optionally bound (`-D`/`-w`); its LDIF output.
/// Fails the test when ldapsearch fails.
pub fn ldapsearch(port: u16, bind: Option<(&str, &str)>, args: &[&str]) -> String {
    ldapsearch_at("127.0.0.1", port, bind, args)
}

/// [`ldapsearch`] against another address.
pub fn ldapsearch_at(host: &str, port: u16, bind: Option<(&str, &str)>, args: &[&str]) -> String {
    let mut cmd = Command::new("ldapsearch");
    cmd.args([
        "-x",
        "-LLL",
        "-o",
        "ldif-wrap=no",
        "-o",
        "nettimeout=30",
        "-H",
        &format!("ldap://{host}:{port}"),
    ])
    .args(["-b", "DC=contoso,DC=example"]);
    if let Some((name, password)) = bind {
        cmd.args(["-D", name, "-w", password]);
    }
    let out = cmd
        .args(args)
        .output()
        .expect("ldapsearch (ldap-utils) must be installed: scripts/test installs it");
    assert!(
        out.status.success(),
        "ldapsearch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
