//! The deployment material as shipped: the Kubernetes manifests against the Kubernetes schemas (offline, with
//! the `kubernetes-validate` package from the tests' venv; no cluster is started), their config through
//! `entradir check-config`, and the HAProxy file through `haproxy -c`. tests/ha_haproxy.rs runs that file.

mod common;

use common::binary::{haproxy, BIN};
use common::venv_bin;
use std::path::Path;
use std::process::Command;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn kubernetes_manifests_match_the_schemas_and_the_kustomization_lists_them_all() {
    let dir = Path::new(DEPLOY).join("kubernetes");
    let mut manifests: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 3, "{manifests:?}");
    let report = run(Command::new(venv_bin("kubernetes-validate"))
        .arg("--strict")
        .args(manifests.iter().map(|m| dir.join(m))));
    for kind in [
        "deployment/entradir",
        "service/entradir-ldap",
        "service/entradir-ldaps",
        "service/entradir-carddav",
        "poddisruptionbudget/entradir",
    ] {
        assert!(
            report.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{report}"
        );
    }
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for m in &manifests {
        assert!(
            kustomization.contains(&format!("- {m}")),
            "kustomization.yaml does not apply {m}"
        );
    }
    assert!(
        kustomization.contains("- entradir.toml"),
        "the ConfigMap is generated from entradir.toml"
    );

    // What the pods rely on.
    let deployment = std::fs::read_to_string(dir.join("deployment.yaml")).unwrap();
    for needed in [
        "path: /readyz",
        "path: /healthz",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "replicas: 2",
    ] {
        assert!(deployment.contains(needed), "deployment.yaml lacks {needed:?}");
    }
}

#[test]
fn the_kubernetes_config_is_a_valid_entradir_config() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("client-secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // The LDAPS certificate the pods get from the Secret entradir-tls.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["ldap.contoso.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let tls = tmp.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    std::fs::write(tls.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(tls.join("tls.key"), key.serialize_pem()).unwrap();
    let shipped = std::fs::read_to_string(Path::new(DEPLOY).join("kubernetes/entradir.toml")).unwrap();
    // The pod's paths, moved into the test's directory; everything else as shipped.
    let cfg = shipped
        .replace("/run/secrets/entradir-tls", &tls.display().to_string())
        .replace("/run/secrets/entradir/client-secret", &secret.display().to_string())
        .replace("/var/lib/entradir", &tmp.path().join("state").display().to_string());
    assert_ne!(cfg, shipped);
    let path = tmp.path().join("entradir.toml");
    std::fs::write(&path, cfg).unwrap();
    run(Command::new(BIN).args(["check-config", "--config"]).arg(&path));
}

#[test]
fn the_haproxy_config_is_accepted_by_haproxy() {
    run(haproxy()
        .args(["-c", "-f"])
        .arg(Path::new(DEPLOY).join("haproxy/haproxy.cfg")));
}
