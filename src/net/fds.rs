//! The open-file limit. Every connection is a file descriptor, and the soft limit most systems start a
//! process with (1024) is far below what the connection caps allow (4,096 for LDAP alone by default): past
//! it, accepting fails and every new client — the PBX too — is turned away until connections close. At start,
//! the soft limit is raised as far as the caps need, up to the hard limit; when the hard limit is lower, the
//! log says so and how to raise it.

/// Descriptors besides connections: state files, the Graph client's connections, listeners, logs.
const SPARE: u64 = 256;

/// Raise the soft open-file limit to `connections` plus some spare, as far as the hard limit allows.
pub fn ensure_for(connections: u64) {
    let wanted = connections.saturating_add(SPARE);
    match rlimit::increase_nofile_limit(wanted) {
        Ok(now) if now >= wanted => tracing::debug!(limit = now, "open-file limit"),
        Ok(now) => tracing::warn!(
            limit = now,
            wanted,
            "the open-file limit is below what max_connections allows: past it new connections fail; raise it \
             (systemd: LimitNOFILE=, a shell: ulimit -Hn) or lower max_connections"
        ),
        Err(e) => tracing::warn!(error = %e, wanted, "could not read or raise the open-file limit"),
    }
}
