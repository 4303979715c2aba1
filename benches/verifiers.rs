//! Verifier throughput (verdicts/second) for Countdown and function calling, on generated data
//! with a mix of correct and wrong responses.

use std::collections::HashSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flywheel_datasets::countdown::generate as cdg;
use flywheel_datasets::function_calling::generate as fcg;
use flywheel_datasets::{load_task, Instance, Task};
use serde_json::Value;

fn countdown_batch(task: &dyn Task) -> Vec<(Instance, String)> {
    let mut out = Vec::new();
    for level in &cdg::LEVELS {
        for (i, p) in cdg::generate(level, 250, 99, "bench", &mut HashSet::new())
            .into_iter()
            .enumerate()
        {
            let value = serde_json::to_value(&p).unwrap_or(Value::Null);
            let Ok(inst) = task.parse_instance(i + 1, value) else {
                continue;
            };
            // Half correct, half a plausible wrong answer (the numbers added up).
            let response = if i % 2 == 0 {
                format!("Let me compute.\n<answer>{}</answer>", p.solution)
            } else {
                let sum: Vec<String> = p.nums.iter().map(u64::to_string).collect();
                format!("<answer>{}</answer>", sum.join(" + "))
            };
            out.push((inst, response));
        }
    }
    out
}

fn function_calling_batch(task: &dyn Task) -> Vec<(Instance, String)> {
    let Ok(catalog) = fcg::catalog() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for level in &fcg::LEVELS {
        for (i, r) in fcg::generate(&catalog, level, 250, 99, "bench", &mut HashSet::new())
            .into_iter()
            .enumerate()
        {
            let value = serde_json::to_value(&r).unwrap_or(Value::Null);
            let Ok(inst) = task.parse_instance(i + 1, value) else {
                continue;
            };
            let response = if i % 2 == 0 {
                format!("```json\n{}\n```", r.answers)
            } else {
                r.answers
                    .replacen("\"arguments\":{", "\"arguments\":{\"extra\":1,", 1)
            };
            out.push((inst, response));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let (Ok(cd), Ok(fc)) = (load_task("countdown"), load_task("function_calling")) else {
        return;
    };
    let mut group = c.benchmark_group("verifiers");
    for (name, task, batch) in [
        ("countdown", &cd, countdown_batch(cd.as_ref())),
        ("function_calling", &fc, function_calling_batch(fc.as_ref())),
    ] {
        group.throughput(Throughput::Elements(batch.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut passed = 0usize;
                for (inst, response) in &batch {
                    passed += usize::from(task.verify(inst, black_box(response)).pass);
                }
                black_box(passed)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
