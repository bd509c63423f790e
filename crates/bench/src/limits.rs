//! The open-file limit: thousands of allocations need thousands of sockets.

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the soft
/// limit now in force (children inherit it).
pub fn raise_fd_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(_) => rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024),
    }
}
