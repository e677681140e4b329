//! The few file-system operations durable writers need, behind a trait, and a simulated file
//! system that loses every write not yet made durable when it "crashes".
//!
//! Why: "acknowledged only once durable" is a claim about which writes survive a power cut.
//! `kill -9` cannot test it (the page cache survives a killed process); a file system that
//! keeps a durable and a volatile view, and on [`sim::SimFs::crash`] throws the volatile one
//! away, can — at every step of a write, deterministically. The model is pessimistic on
//! purpose: a file's bytes are durable only after its fsync, and a directory entry (a new file,
//! a link, a removal, a new folder) only after its parent folder's fsync; nothing else is.
//! The DICOM inbox runs on it (`dicom_net::inbox`); the service's own writers can follow.
//! [`write_atomic`] is the one atomic, durable file writer every other module uses (results,
//! sheets, SR/SC, the journal's compaction, markers, validation records).

use std::io;
use std::path::Path;

/// What a durable writer does to the file system.
pub trait Fs: Send + Sync {
    fn create_dir_all(&self, p: &Path) -> io::Result<()>;
    /// Create one folder (`AlreadyExists` when it exists).
    fn create_dir(&self, p: &Path) -> io::Result<()>;
    /// fsync a folder: its entries become durable.
    fn sync_dir(&self, p: &Path) -> io::Result<()>;
    /// Create (truncate) `p`, write `bytes`, fsync the file (not its folder entry).
    fn write_synced(&self, p: &Path, bytes: &[u8]) -> io::Result<()>;
    /// A second name for `src` (`AlreadyExists` when `dst` exists: never replaces).
    fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()>;
    fn remove_file(&self, p: &Path) -> io::Result<()>;
    fn read(&self, p: &Path) -> io::Result<Vec<u8>>;
    fn is_file(&self, p: &Path) -> bool;
    /// The names in a folder.
    fn list(&self, p: &Path) -> io::Result<Vec<String>>;
}

/// A shared file system (a test keeps a handle to crash and inspect what it gave a writer).
impl<T: Fs + ?Sized> Fs for std::sync::Arc<T> {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        (**self).create_dir_all(p)
    }
    fn create_dir(&self, p: &Path) -> io::Result<()> {
        (**self).create_dir(p)
    }
    fn sync_dir(&self, p: &Path) -> io::Result<()> {
        (**self).sync_dir(p)
    }
    fn write_synced(&self, p: &Path, bytes: &[u8]) -> io::Result<()> {
        (**self).write_synced(p, bytes)
    }
    fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()> {
        (**self).hard_link(src, dst)
    }
    fn remove_file(&self, p: &Path) -> io::Result<()> {
        (**self).remove_file(p)
    }
    fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        (**self).read(p)
    }
    fn is_file(&self, p: &Path) -> bool {
        (**self).is_file(p)
    }
    fn list(&self, p: &Path) -> io::Result<Vec<String>> {
        (**self).list(p)
    }
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl Fs for RealFs {
    fn create_dir_all(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir_all(p)
    }

    fn create_dir(&self, p: &Path) -> io::Result<()> {
        std::fs::create_dir(p)
    }

    fn sync_dir(&self, p: &Path) -> io::Result<()> {
        std::fs::File::open(p)?.sync_all()
    }

    fn write_synced(&self, p: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(p)?;
        f.write_all(bytes)?;
        f.sync_all()
    }

    fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()> {
        std::fs::hard_link(src, dst)
    }

    fn remove_file(&self, p: &Path) -> io::Result<()> {
        std::fs::remove_file(p)
    }

    fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(p)
    }

    fn is_file(&self, p: &Path) -> bool {
        p.is_file()
    }

    fn list(&self, p: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(p)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }
}

/// Write `bytes` to `path` atomically and durably: a temporary file in the same folder, fsync,
/// rename over the target, fsync the folder. A reader (or a power cut) sees the old file or the
/// new one, never half of one.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o666)
}

/// [`write_atomic`] for a secret (a private key, a password hash): created mode 0600, so it is
/// never readable by others, not even for the moment before a chmod.
pub fn write_atomic_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, 0o600)
}

fn write_atomic_mode(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?;
    // Short enough for any name (NAME_MAX is 255 bytes), unique within this process; a stale
    // temporary of an earlier process with the same pid is overwritten, not an error.
    let mut stem = name.to_string_lossy().into_owned();
    while stem.len() > 100 {
        stem.pop();
    }
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{stem}.tmp-{}-{seq}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A simulated file system for crash tests (see the module docs).
pub mod sim {
    use std::collections::BTreeMap;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::Fs;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Entry {
        Dir,
        File(usize),
    }

    #[derive(Debug, Clone)]
    struct Inode {
        data: Vec<u8>,
        /// The bytes as of its last fsync.
        synced: Vec<u8>,
    }

    #[derive(Debug, Default)]
    struct State {
        volatile: BTreeMap<PathBuf, Entry>,
        durable: BTreeMap<PathBuf, Entry>,
        inodes: Vec<Inode>,
        /// Operations left before the power goes (`None`: never).
        budget: Option<usize>,
        ops: usize,
    }

    /// The simulated file system. `crash_after(n)` makes the n+1-th operation and every later
    /// one fail (the power is gone); [`SimFs::crash`] then keeps only what was durable.
    #[derive(Debug, Default)]
    pub struct SimFs {
        s: Mutex<State>,
    }

    fn lost() -> io::Error {
        io::Error::other("simulated power loss")
    }

    impl SimFs {
        /// A file system holding the folder `root` (and its ancestors), durably.
        pub fn new(root: &Path) -> SimFs {
            let fs = SimFs::default();
            {
                let mut s = fs.lock();
                for a in root.ancestors() {
                    s.volatile.insert(a.to_path_buf(), Entry::Dir);
                    s.durable.insert(a.to_path_buf(), Entry::Dir);
                }
            }
            fs
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, State> {
            self.s.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// After `n` more operations, every operation fails.
        pub fn crash_after(&self, n: usize) {
            self.lock().budget = Some(n);
        }

        /// Operations performed so far.
        pub fn ops(&self) -> usize {
            self.lock().ops
        }

        /// The power comes back: only durable entries and fsynced bytes remain.
        pub fn crash(&self) {
            let mut s = self.lock();
            s.volatile = s.durable.clone();
            for i in &mut s.inodes {
                i.data = i.synced.clone();
            }
            s.budget = None;
        }

        fn step(s: &mut State) -> io::Result<()> {
            s.ops += 1;
            match &mut s.budget {
                Some(0) => Err(lost()),
                Some(n) => {
                    *n -= 1;
                    Ok(())
                }
                None => Ok(()),
            }
        }

        fn parent_is_dir(s: &State, p: &Path) -> io::Result<()> {
            match p.parent().and_then(|d| s.volatile.get(d)) {
                Some(Entry::Dir) => Ok(()),
                _ => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: no parent folder", p.display()),
                )),
            }
        }
    }

    impl Fs for SimFs {
        fn create_dir_all(&self, p: &Path) -> io::Result<()> {
            let mut s = self.lock();
            Self::step(&mut s)?;
            for a in p.ancestors() {
                s.volatile.entry(a.to_path_buf()).or_insert(Entry::Dir);
            }
            Ok(())
        }

        fn create_dir(&self, p: &Path) -> io::Result<()> {
            let mut s = self.lock();
            Self::step(&mut s)?;
            if s.volatile.contains_key(p) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            Self::parent_is_dir(&s, p)?;
            s.volatile.insert(p.to_path_buf(), Entry::Dir);
            Ok(())
        }

        fn sync_dir(&self, p: &Path) -> io::Result<()> {
            let mut s = self.lock();
            Self::step(&mut s)?;
            if s.volatile.get(p) != Some(&Entry::Dir) {
                return Err(io::ErrorKind::NotFound.into());
            }
            let child = |q: &PathBuf| q.parent() == Some(p);
            let now: Vec<(PathBuf, Entry)> = s
                .volatile
                .iter()
                .filter(|(q, _)| child(q))
                .map(|(q, e)| (q.clone(), *e))
                .collect();
            s.durable.retain(|q, _| !child(q));
            s.durable.extend(now);
            Ok(())
        }

        fn write_synced(&self, p: &Path, bytes: &[u8]) -> io::Result<()> {
            let mut s = self.lock();
            Self::step(&mut s)?;
            Self::parent_is_dir(&s, p)?;
            s.inodes.push(Inode {
                data: bytes.to_vec(),
                synced: bytes.to_vec(),
            });
            let i = s.inodes.len() - 1;
            s.volatile.insert(p.to_path_buf(), Entry::File(i));
            Ok(())
        }

        fn hard_link(&self, src: &Path, dst: &Path) -> io::Result<()> {
            let mut s = self.lock();
            Self::step(&mut s)?;
            let Some(Entry::File(i)) = s.volatile.get(src).copied() else {
                return Err(io::ErrorKind::NotFound.into());
            };
            if s.volatile.contains_key(dst) {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            Self::parent_is_dir(&s, dst)?;
            s.volatile.insert(dst.to_path_buf(), Entry::File(i));
            Ok(())
        }

        fn remove_file(&self, p: &Path) -> io::Result<()> {
            let mut s = self.lock();
            Self::step(&mut s)?;
            match s.volatile.get(p) {
                Some(Entry::File(_)) => {
                    s.volatile.remove(p);
                    Ok(())
                }
                _ => Err(io::ErrorKind::NotFound.into()),
            }
        }

        fn read(&self, p: &Path) -> io::Result<Vec<u8>> {
            let mut s = self.lock();
            Self::step(&mut s)?;
            match s.volatile.get(p) {
                Some(Entry::File(i)) => Ok(s.inodes[*i].data.clone()),
                _ => Err(io::ErrorKind::NotFound.into()),
            }
        }

        fn is_file(&self, p: &Path) -> bool {
            matches!(self.lock().volatile.get(p), Some(Entry::File(_)))
        }

        fn list(&self, p: &Path) -> io::Result<Vec<String>> {
            let mut s = self.lock();
            Self::step(&mut s)?;
            if s.volatile.get(p) != Some(&Entry::Dir) {
                return Err(io::ErrorKind::NotFound.into());
            }
            Ok(s.volatile
                .keys()
                .filter(|q| q.parent() == Some(p))
                .filter_map(|q| q.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn only_fsynced_bytes_under_fsynced_entries_survive_a_crash() {
            let root = Path::new("/r");
            let fs = SimFs::new(root);
            fs.create_dir(&root.join("a")).unwrap();
            fs.write_synced(&root.join("a/x"), b"x").unwrap();
            fs.crash();
            assert!(
                !fs.is_file(&root.join("a/x")),
                "the folder itself was never synced into /r"
            );
            fs.create_dir(&root.join("a")).unwrap();
            fs.sync_dir(root).unwrap();
            fs.write_synced(&root.join("a/x"), b"x").unwrap();
            fs.crash();
            assert!(
                fs.list(&root.join("a")).unwrap().is_empty(),
                "the entry of x was never synced"
            );
            fs.write_synced(&root.join("a/x"), b"x").unwrap();
            fs.sync_dir(&root.join("a")).unwrap();
            fs.remove_file(&root.join("a/x")).unwrap();
            fs.crash();
            assert_eq!(
                fs.read(&root.join("a/x")).unwrap(),
                b"x",
                "an unsynced removal is undone"
            );
        }

        #[test]
        fn after_the_budget_every_operation_fails_until_the_crash() {
            let root = Path::new("/r");
            let fs = SimFs::new(root);
            fs.crash_after(1);
            assert!(fs.create_dir(&root.join("a")).is_ok());
            assert!(fs.sync_dir(root).is_err());
            fs.crash();
            assert!(fs.list(root).unwrap().is_empty());
        }
    }
}

#[cfg(test)]
mod write_atomic_tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_atomic(&p, b"first version, longer").unwrap();
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn write_atomic_into_a_missing_folder_fails_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing/r.json");
        assert!(write_atomic(&p, b"x").is_err());
        assert!(!p.exists());
    }
}
