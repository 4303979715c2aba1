//! Atomic directory output: build into a hidden sibling, then rename into place, so a failed or
//! interrupted write never leaves a half-written directory where a good one stood.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AtomicDirError {
    #[error("{path} already exists")]
    Exists { path: PathBuf },
    #[error("{path}: another process is writing it now (lock {lock} is held)")]
    Busy { path: PathBuf, lock: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs `build` on a fresh temporary directory beside `out`, then moves it to `out`.
///
/// On error the temporary directory is removed and `out` is untouched. With `replace`, an
/// existing `out` is swapped out only after the new one is complete and synced to disk; if the
/// swap fails half-way the old directory is moved back. Leftovers of a killed run (its
/// temporary directory, or the old copy of an interrupted swap) are cleaned up, or restored, first.
pub fn write_dir<T, E>(
    out: &Path,
    replace: bool,
    build: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<AtomicDirError>,
{
    let (parent, name) = parent_and_name(out);
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    // One writer per output at a time; under the lock, any leftovers are a dead run's.
    let _lock = Lock::take(&parent.join(format!(".{name}.lock")), out)?;
    recover(&parent, &name, out)?;
    if out.exists() && !replace {
        return Err(AtomicDirError::Exists {
            path: out.to_owned(),
        }
        .into());
    }
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let value = match build(&tmp) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let finish = || -> Result<(), AtomicDirError> {
        // Contents on disk before the rename publishes them: after a power loss the new name
        // must not point at empty files while the old copy is already gone.
        sync_tree(&tmp)?;
        if out.exists() {
            let old = parent.join(format!(".{name}.old-{}", std::process::id()));
            std::fs::rename(out, &old).map_err(io(out))?;
            if let Err(source) = std::fs::rename(&tmp, out) {
                let _ = std::fs::rename(&old, out);
                return Err(AtomicDirError::Io {
                    path: out.to_owned(),
                    source,
                });
            }
            sync_dir(&parent);
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            std::fs::rename(&tmp, out).map_err(io(out))?;
            sync_dir(&parent);
        }
        Ok(())
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    Ok(value)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AtomicDirError {
    let path = path.to_owned();
    move |source| AtomicDirError::Io { path, source }
}

/// An exclusive lock on `.NAME.lock` beside the output, held while a directory is written and
/// removed afterwards. A file lock, not a pid check: it is right across PID namespaces and on
/// shared filesystems, and the kernel drops it when its holder dies.
struct Lock {
    path: PathBuf,
    _file: std::fs::File,
}

impl Lock {
    fn take(path: &Path, out: &Path) -> Result<Lock, AtomicDirError> {
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        match file.try_lock() {
            Ok(()) => Ok(Lock {
                path: path.to_owned(),
                _file: file,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(AtomicDirError::Busy {
                path: out.to_owned(),
                lock: path.to_owned(),
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(AtomicDirError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still held (the file closes after this), so the directory is left
        // as it was found.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Deals with what a killed run left (called under the lock, so no live run owns any of it):
/// `.NAME.partial-PID` directories are removed, and a `.NAME.old-PID` left by a swap killed
/// between its two renames is restored as `out` when `out` is missing (it is the last good
/// copy), removed otherwise.
fn recover(parent: &Path, name: &str, out: &Path) -> Result<(), AtomicDirError> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(());
    };
    let (partial, old) = (format!(".{name}.partial-"), format!(".{name}.old-"));
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let is_old = if file_name.starts_with(&partial) {
            false
        } else if file_name.starts_with(&old) {
            true
        } else {
            continue;
        };
        let path = entry.path();
        if is_old && !out.exists() {
            std::fs::rename(&path, out).map_err(io(out))?;
        } else {
            std::fs::remove_dir_all(&path).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// fsyncs every file under `dir`, then the directories themselves.
fn sync_tree(dir: &Path) -> Result<(), AtomicDirError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io(&path))?.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(&path))?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Best effort: not every filesystem lets a directory be synced.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The directory `path` is in (`.` for a bare name) and its file name.
fn parent_and_name(path: &Path) -> (PathBuf, String) {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    (parent, name)
}

/// Replaces the file `path` through a temporary sibling `.NAME.tmp`: `write` creates and fills
/// it (syncing it is `write`'s part, as it holds the file), then it is renamed over `path` and
/// the rename synced. On any error the temporary file is removed and `path` is as it was.
///
/// The temporary name is fixed: callers are the only writer of `path` (a store lock, or one
/// command invocation), and what a killed writer left is simply overwritten.
pub fn replace_file<T, E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<T, E>,
    rename_error: impl FnOnce(std::io::Error) -> E,
) -> Result<T, E> {
    let (dir, name) = parent_and_name(path);
    replace_through(
        &dir.join(format!(".{name}.tmp")),
        &dir,
        path,
        write,
        rename_error,
    )
}

fn replace_through<T, E>(
    tmp: &Path,
    dir: &Path,
    path: &Path,
    write: impl FnOnce(&Path) -> Result<T, E>,
    rename_error: impl FnOnce(std::io::Error) -> E,
) -> Result<T, E> {
    let value = match write(tmp) {
        Ok(v) => v,
        Err(e) => {
            // Best effort: the error being reported matters more than a failed cleanup.
            let _ = std::fs::remove_file(tmp);
            return Err(e);
        }
    };
    if let Err(source) = std::fs::rename(tmp, path) {
        let _ = std::fs::remove_file(tmp);
        return Err(rename_error(source));
    }
    sync_dir(dir);
    Ok(value)
}

/// Writes a small file through a temporary sibling and a rename, like [`replace_file`] but with
/// a temporary name of its own per call (`.NAME.tmp-PID-N`): several processes may write the
/// same file at once (the generate shards of a round each write its `from` and `tasks.jsonl`),
/// and each rename then installs one whole version.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), AtomicDirError> {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (dir, name) = parent_and_name(path);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    replace_through(
        &tmp,
        &dir,
        path,
        |tmp| {
            std::fs::File::create(tmp)
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, bytes)?;
                    f.sync_all()
                })
                .map_err(io(tmp))
        },
        io(path),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers of one file at once (as the shards of a round write its `from`): every write
    /// succeeds and the file is always one whole version. With one fixed temporary name, a
    /// writer's rename found its temporary file already renamed away by the other.
    #[test]
    fn concurrent_writers_of_one_file_each_install_a_whole_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("from");
        std::thread::scope(|s| {
            for t in 0..2u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..200 {
                        write_file(path, &[b'a' + t; 64]).expect("write");
                    }
                });
            }
        });
        let text = std::fs::read(&path).unwrap();
        assert!(text == [b'a'; 64] || text == [b'b'; 64]);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    fn write_one(out: &Path, replace: bool, text: &str) -> Result<(), AtomicDirError> {
        write_dir(out, replace, |d| {
            std::fs::write(d.join("f.txt"), text).map_err(io(d))
        })
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The directory holds `m` alone (no temporary, old copy or lock), with `f.txt` = `text`.
    fn assert_only_m(dir: &Path, text: &str) {
        let f = dir.join("m").join("f.txt");
        assert_eq!(std::fs::read_to_string(f).ok().as_deref(), Some(text));
        assert_eq!(listing(dir), vec!["m"]);
    }

    /// The pid of a killed run (any number: liveness comes from the lock, not the pid).
    const DEAD: u32 = 4242;

    #[test]
    fn failed_build_keeps_the_old_directory_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("m");
        write_one(&out, false, "good").expect("first");
        let err = write_dir::<(), AtomicDirError>(&out, true, |d| {
            std::fs::write(d.join("f.txt"), "half").map_err(io(d))?;
            Err(AtomicDirError::Exists { path: d.to_owned() })
        });
        assert!(err.is_err());
        assert_only_m(dir.path(), "good");
        write_one(&out, true, "new").expect("replace");
        assert_only_m(dir.path(), "new");
    }

    #[test]
    fn leftovers_of_a_killed_run_are_removed_or_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("m");
        // Killed between the swap's two renames: `m` is gone, the good copy sits in `.m.old-*`,
        // and the new, unfinished copy in `.m.partial-*`.
        let old = dir.path().join(format!(".m.old-{DEAD}"));
        std::fs::create_dir(&old).expect("mkdir");
        std::fs::write(old.join("f.txt"), "good").expect("write");
        let partial = dir.path().join(format!(".m.partial-{DEAD}"));
        std::fs::create_dir(&partial).expect("mkdir");
        // Without --force the restored directory is kept, and the refusal names it.
        let err = write_one(&out, false, "new").expect_err("m exists again");
        assert!(matches!(err, AtomicDirError::Exists { .. }), "{err}");
        assert_only_m(dir.path(), "good");
        // A stale old copy beside a complete `m` is just removed.
        std::fs::create_dir(&old).expect("mkdir");
        write_one(&out, true, "new").expect("replace");
        assert_only_m(dir.path(), "new");
    }

    #[test]
    fn a_live_writer_is_not_disturbed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("m");
        let lock_path = dir.path().join(".m.lock");
        let held = Lock::take(&lock_path, &out).expect("lock");
        // A live writer's unfinished directory: not a leftover while its lock is held.
        let partial = dir.path().join(format!(".m.partial-{DEAD}"));
        std::fs::create_dir(&partial).expect("mkdir");
        let err = write_one(&out, true, "new").expect_err("busy");
        assert!(matches!(err, AtomicDirError::Busy { .. }), "{err}");
        assert!(partial.is_dir() && !out.exists());
        drop(held);
        assert!(!lock_path.exists(), "lock file removed with the lock");
        write_one(&out, true, "new").expect("after the writer ended");
        assert_only_m(dir.path(), "new");
    }
}
