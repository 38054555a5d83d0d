//! Free space before opening or writing to a stored index.
//!
//! qdrant-edge keeps its write-ahead log and payload pages in files of 32 MiB that it writes
//! through memory maps (`wal/open-N`, `payload_storage/page_N.dat` in an index's `vectors/`
//! directory). On a full disk such a write cannot be refused with an error: the kernel kills
//! the process with SIGBUS. The crash drill on a small tmpfs found it: `index add` died with
//! exit status 135 and not a word, and so did a search on a full disk, since opening the store
//! writes too. Measured there, opening a new index takes 34 MiB of the disk (its first log
//! segment). So opening is refused unless the disk has room for that and a write, and each
//! write unless it has room for a new log segment and a new payload page, with an error that
//! says why.

use std::path::Path;

use crate::{Error, Result};

/// The free space opening a stored index needs on its disk.
pub const OPEN_FREE_BYTES: u64 = 128 << 20;

/// The free space each write to a stored index needs on its disk: a new 32 MiB log segment
/// and a new 32 MiB payload page.
pub const WRITE_FREE_BYTES: u64 = 64 << 20;

/// [`Error::DiskFull`] unless the disk of `dir` has `need` bytes free.
pub(crate) fn ensure_room(dir: &Path, need: u64) -> Result<()> {
    let free = fs4::available_space(dir).map_err(|e| Error::io(dir, e))?;
    if free < need {
        return Err(Error::DiskFull { path: dir.to_path_buf(), free, need });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_without_the_room_asked_for_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_room(dir.path(), 1).is_ok());
        let error = ensure_room(dir.path(), u64::MAX).unwrap_err();
        assert!(matches!(error, Error::DiskFull { need: u64::MAX, .. }), "{error}");
        let message = error.to_string();
        assert!(message.contains("not enough free space") && message.contains("MiB"), "{message}");
    }
}
