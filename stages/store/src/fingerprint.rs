//! Content fingerprints of a run's inputs: the model's weights, the model folder's other files
//! that shape records, and any text (the task's identity). A run stores these, never paths, so it
//! resumes from any directory and refuses to resume when what shapes its records changed.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::StoreError;

/// Files of a model folder besides the weights that shape generated records, in hashing order.
pub const MODEL_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "genai_config.json",
    "generation_config.json",
];

/// SHA-256 (lowercase hex) over the [`MODEL_FILES`] present in `dir`: for each, its name, its
/// length (u64 little-endian) and its bytes, so moving content between files changes the hash.
pub fn model_files_hash(dir: &Path) -> Result<String, StoreError> {
    let mut hasher = Sha256::new();
    for name in MODEL_FILES {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|source| StoreError::ReadWeights {
            path: path.clone(),
            source,
        })?;
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of a string, lowercase hex (the task identity's hash).
pub fn text_hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (lowercase hex) of a model's weights: the bytes of its weight files concatenated in
/// file-name order, read in 1 MiB chunks. The weight files are the `*.safetensors` in `dir`;
/// if there are none, the `*.onnx` files and their external data (`*.onnx.data`,
/// `*.onnx_data`) in `dir`, else in `dir/onnx`. For a single file this equals
/// `sha256sum FILE`; for several, `cat FILES | sha256sum`.
pub fn model_hash(dir: &Path) -> Result<String, StoreError> {
    files_hash(&weight_files(dir)?)
}

/// SHA-256 (lowercase hex) of one file's bytes, as `sha256sum FILE` (a training input's identity).
pub fn file_hash(path: &Path) -> Result<String, StoreError> {
    files_hash(&[path.to_owned()])
}

/// SHA-256 of the files' bytes concatenated in the order given.
fn files_hash(files: &[PathBuf]) -> Result<String, StoreError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in files {
        let read_err = |source| StoreError::ReadWeights {
            path: path.clone(),
            source,
        };
        let mut file = File::open(path).map_err(read_err)?;
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            hasher.update(&buf[..n]);
        }
    }
    Ok(hex(&hasher.finalize()))
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let safetensors = files_with_suffix(dir, &[".safetensors"])?;
    if !safetensors.is_empty() {
        return Ok(safetensors);
    }
    for d in [dir.to_path_buf(), dir.join("onnx")] {
        if !d.is_dir() {
            continue;
        }
        let onnx = files_with_suffix(&d, &[".onnx", ".onnx.data", ".onnx_data"])?;
        if onnx.iter().any(|p| p.to_string_lossy().ends_with(".onnx")) {
            return Ok(onnx);
        }
    }
    Err(StoreError::NoWeights {
        dir: dir.to_path_buf(),
    })
}

/// Regular files in `dir` whose name ends with one of `suffixes`, sorted by name.
fn files_with_suffix(dir: &Path, suffixes: &[&str]) -> Result<Vec<PathBuf>, StoreError> {
    let read_err = |source| StoreError::ReadWeights {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if suffixes.iter().any(|s| name.ends_with(s)) && entry.path().is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_hash_streams_safetensors_bytes() {
        let dir = tempfile::tempdir().unwrap();
        // SHA-256("abc"), the FIPS 180-2 test vector.
        std::fs::write(dir.path().join("model.safetensors"), b"abc").unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        assert_eq!(
            model_hash(dir.path()).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn model_hash_of_onnx_folder_covers_graph_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("onnx");
        std::fs::create_dir(&onnx).unwrap();
        std::fs::write(onnx.join("model.onnx"), b"a").unwrap();
        std::fs::write(onnx.join("model.onnx.data"), b"bc").unwrap();
        let nested = model_hash(dir.path()).unwrap();
        // Same bytes in order "a" + "bc" = "abc".
        assert_eq!(
            nested,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(model_hash(&onnx).unwrap(), nested);
        std::fs::write(onnx.join("model.onnx.data"), b"bd").unwrap();
        assert_ne!(model_hash(&onnx).unwrap(), nested, "data file must count");
    }

    #[test]
    fn model_hash_without_weights_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let err = model_hash(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NoWeights { .. }), "{err}");
    }
}
