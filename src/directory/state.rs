//! Persisting the directory's source data and delta links to `state_dir`, atomically.

/// serde helper: `Bytes` as base64 text in JSON state files.
pub mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(bytes::Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

use crate::directory::change::DeltaLinks;
use crate::directory::store::Store;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the state file inside `state_dir`.
pub const STATE_FILE: &str = "entradir-state.json";
const FORMAT: &str = "entradir-state";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: cannot read state: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: state file is corrupt ({reason}); it was moved to {moved_to} and a full sync will rebuild it")]
    Corrupt {
        path: PathBuf,
        reason: String,
        moved_to: String,
    },
    #[error(
        "{path}: state belongs to tenant {found}, not the configured {expected}; ignoring it and syncing from scratch"
    )]
    Foreign {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{path}: cannot write state: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error(
        "{dir} is in use by another entradir ({holder}); only one process may write a state_dir: stop it, or \
         point this one at another directory.state_dir"
    )]
    Locked { dir: PathBuf, holder: String },
}

/// The lock file in a state_dir; it holds the PID of the process that has it.
pub const LOCK_FILE: &str = "entradir.lock";

/// The advisory lock on a state_dir, held for as long as this lives; the kernel releases it when the process
/// ends, however it ends.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

/// Take the state_dir's lock, or name who holds it. Also clears temp files that a killed writer left.
pub fn lock(dir: &Path) -> Result<StateLock, StateError> {
    let path = dir.join(LOCK_FILE);
    let werr = |error: std::io::Error| StateError::Write {
        path: path.clone(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(werr)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = match pid.trim() {
                "" => "PID unknown".to_string(),
                p => format!("PID {p}"),
            };
            return Err(StateError::Locked {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(werr(e)),
    }
    file.set_len(0).map_err(werr)?;
    writeln!(file, "{}", std::process::id()).map_err(werr)?;
    file.flush().map_err(werr)?;
    // Holding the lock, nobody else is writing: temp files here are leftovers of a killed process.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{STATE_FILE}.tmp"))
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(StateLock { _file: file })
}

/// What is persisted after every successful round.
#[derive(Debug, Deserialize)]
pub struct State {
    pub format: String,
    pub format_version: u32,
    pub tenant_id: String,
    pub saved_at: u64,
    pub store: Store,
    pub delta_links: DeltaLinks,
    /// The directory version when saved, so versions (AD's `uSNChanged`, `highestCommittedUSN`) keep growing
    /// across restarts. Absent in older state files: 0.
    #[serde(default)]
    pub version: u64,
}

#[derive(Serialize)]
struct StateRef<'a> {
    format: &'a str,
    format_version: u32,
    tenant_id: &'a str,
    saved_at: u64,
    store: &'a Store,
    delta_links: &'a DeltaLinks,
    version: u64,
}

/// Write the state atomically: a temp file in the same directory, fsync, rename over the old file, fsync the
/// directory. A crash at any point leaves either the old or the new state, never a torn file.
pub fn save(dir: &Path, tenant_id: &str, store: &Store, links: &DeltaLinks, version: u64) -> Result<(), StateError> {
    let path = dir.join(STATE_FILE);
    // Unique per process and write, so two writers (which the lock should prevent) can never interleave in one
    // temp file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{STATE_FILE}.tmp.{}.{n}", std::process::id()));
    let werr = |error: std::io::Error| StateError::Write {
        path: path.clone(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let state = StateRef {
        format: FORMAT,
        format_version: FORMAT_VERSION,
        tenant_id,
        saved_at: crate::directory::core::unix_now(),
        store,
        delta_links: links,
        version,
    };
    let written = (|| {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        serde_json::to_writer(&mut w, &state).map_err(std::io::Error::other)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(e));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Load the state for `tenant_id`. `Ok(None)` when there is none yet. A corrupt file is moved aside (so the
/// evidence is kept and the next save does not fail on it) and reported; the caller then syncs from scratch.
pub fn load(dir: &Path, tenant_id: &str) -> Result<Option<State>, StateError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StateError::Read { path, error }),
    };
    let corrupt = |reason: String| {
        let aside = dir.join(format!("{STATE_FILE}.corrupt-{}", crate::directory::core::unix_now()));
        let moved_to = match std::fs::rename(&path, &aside) {
            Ok(()) => aside.display().to_string(),
            Err(e) => format!("(nowhere: {e})"),
        };
        StateError::Corrupt {
            path: path.clone(),
            reason,
            moved_to,
        }
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if state.format != FORMAT || state.format_version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "unknown format {} v{}",
            state.format, state.format_version
        )));
    }
    if state.tenant_id != tenant_id {
        return Err(StateError::Foreign {
            path,
            found: state.tenant_id,
            expected: tenant_id.to_string(),
        });
    }
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One writer per state_dir: a second lock names the holder's PID; leftovers of a killed writer's temp files
    /// are cleared by the next holder, and a write leaves none behind.
    #[test]
    fn a_state_dir_has_one_writer() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{STATE_FILE}.tmp.999.0")), b"half").unwrap();
        let held = lock(dir.path()).unwrap();
        let e = lock(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains(&format!("PID {}", std::process::id()))
                && e.to_string().contains(&dir.path().display().to_string()),
            "{e}"
        );
        save(dir.path(), "t1", &Store::default(), &DeltaLinks::default(), 1).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
        drop(held);
        lock(dir.path()).expect("free again once the holder is gone");
    }

    #[test]
    fn round_trips_and_rejects_corrupt_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::default();
        store.users.insert("u1".into(), Default::default());
        save(dir.path(), "t1", &store, &DeltaLinks::default(), 7).unwrap();
        let st = load(dir.path(), "t1").unwrap().unwrap();
        assert_eq!(st.store, store);
        assert_eq!(st.version, 7);
        // Earlier releases also kept the names they had handed out; names are now computed from the tenant,
        // and such a file loads with them ignored.
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(STATE_FILE)).unwrap()).unwrap();
        v["names"] =
            serde_json::json!({"u1": {"sam_base": "a", "sam": "a1", "cn_base": "A", "cn": "A", "container": "c"}});
        std::fs::write(dir.path().join(STATE_FILE), serde_json::to_vec(&v).unwrap()).unwrap();
        let st = load(dir.path(), "t1").unwrap().unwrap();
        assert_eq!(st.store, store);
        assert!(matches!(load(dir.path(), "t2"), Err(StateError::Foreign { .. })));
        std::fs::write(dir.path().join(STATE_FILE), b"{\"format\": \"entradir-state\", trunc").unwrap();
        let e = load(dir.path(), "t1").unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        // Moved aside: the next start finds no state and syncs from scratch.
        assert!(load(dir.path(), "t1").unwrap().is_none());
        assert!(std::fs::read_dir(dir.path()).unwrap().any(|f| f
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("corrupt")));
    }
}
