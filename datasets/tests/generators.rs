//! Generators: reproducible byte for byte, Countdown targets reachable (independent solver), and
//! every synthetic function-calling answer valid under its schema.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use flywheel_datasets::countdown::generate as cdg;
use flywheel_datasets::function_calling::generate as fcg;
use flywheel_datasets::function_calling::tools::{parse_tools, ParamType};
use flywheel_datasets::function_calling::verify::parse_gold;
use flywheel_datasets::{load_task, read_instances};
use serde_json::Value;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

#[test]
fn shipped_files_regenerate_byte_identically() {
    let files = flywheel_datasets::shipped_data_files().expect("generators");
    assert_eq!(files.len(), 4);
    for (rel, contents) in files {
        let committed = std::fs::read(data_dir().join(&rel)).expect("committed file");
        assert!(
            committed == contents.as_bytes(),
            "{rel} differs from the generator output; run `cargo run -p flywheel-datasets --bin make-datasets`"
        );
    }
}

#[test]
fn same_seed_same_problems_other_seed_other_problems() {
    let level = cdg::level("medium").expect("level");
    let a = cdg::generate(level, 50, 7, "x", &mut HashSet::new());
    let b = cdg::generate(level, 50, 7, "x", &mut HashSet::new());
    let c = cdg::generate(level, 50, 8, "x", &mut HashSet::new());
    assert_eq!(a, b);
    assert_ne!(a, c);
    let cat = fcg::catalog().expect("catalog");
    let l = fcg::level("hard").expect("level");
    let x = fcg::generate(&cat, l, 20, 3, "y", &mut HashSet::new());
    let y = fcg::generate(&cat, l, 20, 3, "y", &mut HashSet::new());
    assert_eq!(x, y);
}

/// Exact fraction for the independent solver (i128, not the crate's Rational).
type Frac = (i128, i128);

fn norm((n, d): Frac) -> Frac {
    fn g(a: i128, b: i128) -> i128 {
        if b == 0 {
            a.abs()
        } else {
            g(b, a % b)
        }
    }
    let k = g(n, d).max(1) * d.signum();
    (n / k, d / k)
}

/// Classic Countdown search: combine any two values with any operator until one is left.
fn reachable(vals: &[Frac], target: i128) -> bool {
    if vals.len() == 1 {
        return vals[0] == (target, 1);
    }
    for i in 0..vals.len() {
        for j in 0..vals.len() {
            if i == j {
                continue;
            }
            let rest: Vec<Frac> = (0..vals.len())
                .filter(|&k| k != i && k != j)
                .map(|k| vals[k])
                .collect();
            let (a, b) = (vals[i], vals[j]);
            let mut cands = vec![
                norm((a.0 * b.1 + b.0 * a.1, a.1 * b.1)),
                norm((a.0 * b.1 - b.0 * a.1, a.1 * b.1)),
                norm((a.0 * b.0, a.1 * b.1)),
            ];
            if b.0 != 0 {
                cands.push(norm((a.0 * b.1, a.1 * b.0)));
            }
            for c in cands {
                let mut next = rest.clone();
                next.push(c);
                if reachable(&next, target) {
                    return true;
                }
            }
        }
    }
    false
}

#[test]
fn solver_sanity() {
    assert!(reachable(&[(8, 1), (3, 1), (8, 1), (3, 1)], 24));
    assert!(!reachable(&[(1, 1), (1, 1)], 5));
    assert!(!reachable(&[(2, 1), (3, 1)], 7));
}

#[test]
fn countdown_splits_are_valid_reachable_and_disjoint() {
    let task = load_task("countdown").expect("task");
    let mut keys: HashMap<(Vec<u64>, i64), String> = HashMap::new();
    let mut per_level: HashMap<(String, String), usize> = HashMap::new();
    for split in ["test", "train"] {
        let path = data_dir().join(format!("countdown/{split}.jsonl"));
        for inst in read_instances(task.as_ref(), &path) {
            let inst = inst.expect("valid instance");
            let f = &inst.fields;
            let level_name = f["level"].as_str().expect("level").to_string();
            let level = cdg::level(&level_name).expect("known level");
            let nums: Vec<u64> = f["nums"]
                .as_array()
                .expect("nums")
                .iter()
                .map(|v| v.as_u64().expect("u64"))
                .collect();
            let target = f["target"].as_i64().expect("target");
            assert!(level.counts.contains(&nums.len()), "{}", inst.id);
            assert!(
                nums.iter().all(|&n| (1..=level.max_value).contains(&n)),
                "{}",
                inst.id
            );
            assert!((1..=level.max_target).contains(&target), "{}", inst.id);
            let fr: Vec<Frac> = nums.iter().map(|&n| (n as i128, 1)).collect();
            assert!(reachable(&fr, target as i128), "{} unreachable", inst.id);
            let solution = f["solution"].as_str().expect("solution");
            let v = task.verify(&inst, &format!("<answer>{solution}</answer>"));
            assert!(v.pass, "{}: own solution fails: {v:?}", inst.id);
            let mut sorted = nums.clone();
            sorted.sort_unstable();
            if let Some(prev) = keys.insert((sorted, target), inst.id.clone()) {
                panic!("duplicate problem {} and {}", prev, inst.id);
            }
            *per_level
                .entry((split.to_string(), level_name))
                .or_default() += 1;
        }
    }
    for level in cdg::LEVELS {
        assert_eq!(
            per_level[&("test".to_string(), level.name.to_string())],
            cdg::TEST_PER_LEVEL
        );
        assert_eq!(
            per_level[&("train".to_string(), level.name.to_string())],
            cdg::TRAIN_PER_LEVEL
        );
    }
    let test_total: usize = per_level
        .iter()
        .filter(|(k, _)| k.0 == "test")
        .map(|(_, v)| v)
        .sum();
    assert!(test_total >= 1000);
}

#[test]
fn catalog_is_broad_and_templates_are_complete() {
    let cat = fcg::catalog().expect("catalog parses");
    assert!(cat.len() >= 100, "{} tools", cat.len());
    let names: HashSet<&str> = cat.iter().map(|t| t.schema.name.as_str()).collect();
    assert_eq!(names.len(), cat.len(), "duplicate tool names");
    let domains: HashSet<&str> = cat.iter().map(|t| t.domain).collect();
    assert!(domains.len() >= 8);
    let mut types = HashSet::new();
    let (mut enums, mut optional) = (0, 0);
    for t in &cat {
        for p in &t.schema.params {
            types.insert(format!("{:?}", p.ty));
            enums += usize::from(p.enum_values.is_some());
            optional += usize::from(!p.required);
            let placeholder = format!("{{{}}}", p.name);
            assert_eq!(
                t.template.contains(&placeholder),
                p.required,
                "{}: {}",
                t.schema.name,
                p.name
            );
        }
    }
    for ty in [
        ParamType::String,
        ParamType::Integer,
        ParamType::Number,
        ParamType::Boolean,
    ] {
        assert!(types.contains(&format!("{ty:?}")), "no {ty:?} parameter");
    }
    assert!(
        enums >= 20 && optional >= 50,
        "enums {enums}, optional {optional}"
    );
}

#[test]
fn function_calling_splits_satisfy_their_schemas() {
    let task = load_task("function_calling").expect("task");
    let mut queries = HashSet::new();
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    let mut call_counts: HashSet<usize> = HashSet::new();
    for split in ["test", "train"] {
        let path = data_dir().join(format!("function_calling/{split}.jsonl"));
        // Raw lines keep xLAM's string-encoded fields, as in the original format.
        let text = std::fs::read_to_string(&path).expect("data");
        for line in text.lines() {
            let raw: Value = serde_json::from_str(line).expect("json");
            assert!(raw["tools"].is_string() && raw["answers"].is_string());
            let tools = parse_tools(&raw["tools"]).expect("tools");
            let answers = parse_gold(&raw["answers"]).expect("answers");
            let level_name = raw["level"].as_str().expect("level").to_string();
            let level = fcg::level(&level_name).expect("known level");
            assert!((level.candidates.0..=level.candidates.1).contains(&tools.len()));
            assert!((level.calls.0..=level.calls.1).contains(&answers.len()));
            call_counts.insert(answers.len());
            for call in &answers {
                let tool = tools
                    .iter()
                    .find(|t| t.name == call.name)
                    .expect("gold tool among candidates");
                tool.check_arguments(&call.arguments)
                    .unwrap_or_else(|e| panic!("{}: {e}", raw["id"]));
                if level_name == "trivial" {
                    assert!(tool.params.iter().filter(|p| p.required).count() <= 2);
                }
            }
            assert!(
                queries.insert(raw["query"].as_str().expect("query").to_string()),
                "duplicate query"
            );
            let inst = task.parse_instance(1, raw.clone()).expect("instance");
            let v = task.verify(&inst, raw["answers"].as_str().expect("answers"));
            assert!(v.pass, "{}: gold fails: {v:?}", inst.id);
            *counts.entry((split.to_string(), level_name)).or_default() += 1;
        }
    }
    let total = |s: &str| {
        counts
            .iter()
            .filter(|(k, _)| k.0 == s)
            .map(|(_, v)| v)
            .sum::<usize>()
    };
    assert!(total("train") >= 2000 && total("test") >= 500);
    for l in fcg::LEVELS {
        assert_eq!(
            counts[&("test".to_string(), l.name.to_string())],
            fcg::TEST_PER_LEVEL
        );
    }
    assert_eq!(call_counts, HashSet::from([1, 2, 3]));
}
