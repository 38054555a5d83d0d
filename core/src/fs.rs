//! Files that survive a crash mid-write.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` so that a crash at any point leaves either the old file or the
/// new one, never a torn mix: the bytes go to a temporary file in the same directory (a rename
/// across file systems would not be atomic), are synced, and the temporary file is renamed over
/// `path`; then the directory is synced so the rename itself is durable. Sessions, session
/// metadata, voice profiles and the audio index's metadata are all written this way.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Hidden and named after its target, so a leftover from a killed process is recognisable;
    // tempfile removes it on every error path before `persist`.
    let mut file =
        tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    // Directories cannot be opened on every platform; where they can, persist the rename.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::write_atomically;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomically(&path, b"old").unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        // A file cannot be renamed over a non-empty directory.
        let target = dir.path().join("sub");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("kept"), b"kept").unwrap();
        assert!(write_atomically(&target, b"new").is_err());
        assert_eq!(std::fs::read(target.join("kept")).unwrap(), b"kept");
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("sub")]);
    }
}
