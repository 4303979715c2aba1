//! Atomic directory output: build into a hidden sibling, then rename into place, so a failed or
//! interrupted write never leaves a half-written directory where a good one stood.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AtomicDirError {
    #[error("{path} already exists (pass --force to replace it)")]
    Exists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs `build` on a fresh temporary directory beside `out`, then moves it to `out`.
///
/// On error the temporary directory is removed and `out` is untouched. With `replace`, an
/// existing `out` is swapped out only after the new one is complete.
pub fn write_dir<T, E>(
    out: &Path,
    replace: bool,
    build: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<AtomicDirError>,
{
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| AtomicDirError::Io { path, source }
    };
    if out.exists() && !replace {
        return Err(AtomicDirError::Exists {
            path: out.to_owned(),
        }
        .into());
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
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
        if out.exists() {
            let old = parent.join(format!(".{name}.old-{}", std::process::id()));
            std::fs::rename(out, &old).map_err(io(out))?;
            std::fs::rename(&tmp, out).map_err(io(out))?;
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            std::fs::rename(&tmp, out).map_err(io(out))?;
        }
        Ok(())
    };
    if let Err(e) = finish() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    Ok(value)
}

/// Writes a file through a temporary sibling and a rename.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), AtomicDirError> {
    let tmp = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|source| AtomicDirError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| AtomicDirError::Io {
        path: path.to_owned(),
        source,
    })
}
