//! The layout keeps native dependencies in their rooms: the engine, the store, the label stage,
//! the tch-free model crate and the tasks build without libtorch, and nothing below the runtime
//! crate links ONNX Runtime.

use std::process::Command;

/// `cargo tree -e normal` of `package`, one crate name per line.
fn tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn crates(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn libtorch_stays_out_of_the_engine_store_label_eval_model_and_tasks() {
    for package in [
        "flywheel-generate",
        "flywheel-store",
        "flywheel-label",
        "flywheel-eval",
        "flywheel-stats",
        "flywheel-model",
        "flywheel-datasets",
        "flywheel-runtime",
        "flywheel-core",
    ] {
        let t = tree(package);
        let names = crates(&t);
        assert!(names.contains(&package), "{package}: {t}");
        for native in ["tch", "torch-sys"] {
            assert!(
                !names.contains(&native),
                "{package} depends on {native}:\n{t}"
            );
        }
    }
}

#[test]
fn onnx_runtime_stays_out_of_the_store_label_trainer_eval_model_and_tasks() {
    for package in [
        "flywheel-store",
        "flywheel-label",
        "flywheel-train",
        "flywheel-eval",
        "flywheel-stats",
        "flywheel-model",
        "flywheel-datasets",
        "flywheel-core",
    ] {
        let t = tree(package);
        for native in ["ort", "ort-sys"] {
            assert!(
                !crates(&t).contains(&native),
                "{package} depends on {native}:\n{t}"
            );
        }
    }
}
