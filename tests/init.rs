//! `flywheel init` on the tiny model: the layout, a documented `flywheel.toml` that reads back as
//! the report's settings with `--set` applied, round 0 exported and parity-checked as `current`;
//! an existing directory, an unknown setting, a malformed input and a model whose export fails
//! its parity check are refused with nothing left behind.

mod common;

use std::path::{Path, PathBuf};

use flywheel::commands::init::{self, InitArgs};
use flywheel::run::config::RunConfig;

fn args(run: &Path, model: &Path) -> InitArgs {
    let (task, data) = common::tiny_task();
    InitArgs {
        run_dir: run.to_owned(),
        task: Some(task.display().to_string()),
        train_input: Some(data.clone()),
        eval_input: Some(data),
        model: Some(model.to_owned()),
        gguf: None,
        config: None,
        sets: vec![
            "round.tasks=8".into(),
            "train.lr=1e-4".into(),
            "export.fused=false".into(),
        ],
        threads: 1,
    }
}

fn tiny(dir: &Path) -> PathBuf {
    let m = dir.join("tiny");
    flywheel_llama::tiny::create(&m, 17).expect("tiny");
    m
}

#[test]
fn init_lays_out_round_zero_and_documented_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny(dir.path());
    let run = dir.path().join("run");
    let r = init::run(&args(&run, &model)).expect("init");
    for p in [
        "flywheel.toml",
        "current",
        "rounds/0000/model/config.json",
        "rounds/0000/model/model.safetensors",
        "rounds/0000/model/onnx/model.onnx",
        "rounds/0000/model/onnx/genai_config.json",
    ] {
        assert!(run.join(p).is_file(), "{p}");
    }
    assert_eq!(
        std::fs::read_to_string(run.join("current")).expect("current"),
        "0000\n"
    );
    let text = std::fs::read_to_string(run.join("flywheel.toml")).expect("toml");
    let c = RunConfig::parse(&text, Path::new("flywheel.toml")).expect("parse");
    assert_eq!(c, r.config);
    assert_eq!(
        (c.round.tasks, c.train.lr, c.export.fused),
        (8, 1e-4, false)
    );
    assert!(c.task.train_input.is_absolute());
    assert!(
        text.contains("# peak learning rate\nlr = 0.0001\n"),
        "{text}"
    );
    assert_eq!(r.train_tasks, 40);
    assert!(r.parity_max_abs_diff.expect("checked") < 1e-4);
    assert_eq!(
        r.model_hash,
        flywheel_store::model_hash(&run.join("rounds/0000/model/onnx")).unwrap()
    );

    // Again with the same settings: a no-op; with others: refused, nothing changed. From the
    // written settings with one more change, into a new directory: equal but for it.
    let again = init::run(&args(&run, &model)).expect("same init again");
    assert!(again.already && again.parity_max_abs_diff.is_none());
    assert_eq!(again.model_hash, r.model_hash);
    let mut other_lr = args(&run, &model);
    other_lr.sets.push("train.lr=3e-4".into());
    let e = init::run(&other_lr).unwrap_err().to_string();
    assert!(e.contains("exists with other settings"), "{e}");
    assert_eq!(
        std::fs::read_to_string(run.join("flywheel.toml")).unwrap(),
        text
    );
    let other = dir.path().join("other");
    let from_file = InitArgs {
        task: None,
        train_input: None,
        eval_input: None,
        config: Some(run.join("flywheel.toml")),
        sets: vec!["generate.reflections=6".into()],
        ..args(&other, &model)
    };
    let r2 = init::run(&from_file).expect("init from a settings file");
    assert_eq!(r2.config.generate.reflections, 6);
    assert_eq!(r2.config.train.lr, 1e-4);
}

#[test]
fn bad_settings_inputs_and_a_failing_parity_check_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = tiny(dir.path());
    let run = dir.path().join("run");
    let cases: Vec<(InitArgs, &str)> = vec![
        (
            InitArgs {
                sets: vec!["train.learning_rate=1".into()],
                ..args(&run, &model)
            },
            "`train.learning_rate` is not a setting",
        ),
        (
            InitArgs {
                sets: vec!["train.loss=ppo".into()],
                ..args(&run, &model)
            },
            "train.loss = \"ppo\": expected one of grpo, bnpo, dr_grpo, dapo",
        ),
        (
            InitArgs {
                task: None,
                ..args(&run, &model)
            },
            "--task is required",
        ),
        (
            InitArgs {
                task: Some("no_such_task".into()),
                ..args(&run, &model)
            },
            "no_such_task",
        ),
    ];
    for (a, want) in cases {
        let e = init::run(&a).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
        assert!(!run.exists(), "{want}: nothing written");
    }
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"broken\n").unwrap();
    let e = init::run(&InitArgs {
        train_input: Some(bad),
        ..args(&run, &model)
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("bad.jsonl"), "{e}");
    assert!(!run.exists());

    // A NaN in one weight: ONNX Runtime and tch disagree, the parity check fails, nothing stays.
    let broken = dir.path().join("broken");
    flywheel_llama::tiny::create(&broken, 17).expect("tiny");
    common::inject_nan(&broken, "model.layers.0.mlp.down_proj.weight");
    let e = init::run(&args(&run, &broken)).unwrap_err().to_string();
    assert!(e.contains("export parity failed"), "{e}");
    assert!(!run.exists(), "a failed init leaves no run directory");
}

/// The learning experiment's committed recipes stay runnable as the settings evolve: each loads
/// through `init` (every setting known and valid, the control's attempt span with its attempts),
/// names inputs that exist, and plans its rounds; so does the recipe with the one setting its
/// μ = 2 run (`run.sh runs/mu2 benches/learning/recipe.toml --set train.iterations=2`) changes.
#[test]
fn the_learning_recipes_are_valid_run_settings() {
    for (name, span, sets) in [
        ("recipe", "reflection", &[][..]),
        ("recipe-control", "attempt", &[]),
        ("recipe", "reflection", &["train.iterations=2"]),
    ] {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/learning/{name}.toml"));
        let c = init::settings(&InitArgs {
            run_dir: PathBuf::from("unused"),
            task: None,
            train_input: None,
            eval_input: None,
            model: None,
            gguf: None,
            config: Some(path),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            threads: 1,
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.label.span, span, "{name}");
        assert!(c.rounds > 0, "{name}: the experiment plans its rounds");
        assert!(c.task.train_input.is_file() && c.task.eval_input.is_file());
        assert!(Path::new(&c.task.prompts)
            .join("countdown/reflect.txt")
            .is_file());
        // 64 tasks a round over the planned rounds fit the committed training file.
        let lines = std::fs::read_to_string(&c.task.train_input).expect("train input");
        assert!(
            lines.lines().count() as u64 >= c.rounds * c.round.tasks,
            "{name}"
        );
        assert!(
            c.eval.limit >= 500,
            "{name}: at least 500 held-out instances"
        );
    }
}
