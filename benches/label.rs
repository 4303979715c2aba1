//! Labelling throughput: `flywheel label` (the polars engine, its checks and the atomic write of
//! train.parquet) on a synthetic round of 100,000+ rollout rows written through the store and its
//! Parquet export, with realistic lengths (200-token prompts, 64-token reflections, G = 4).

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flywheel_core::SplitMix64;
use flywheel_label::{label_runs, LabelConfig};
use flywheel_store::{
    export_rollouts, AttemptRecord, FinishReason, Generation, ReflectionRecord, RetryRecord,
    RunMeta, Store, TaskRecord, WriteBatch, ROLLOUTS_FILE,
};

const TASKS: u64 = 12_500;
const G: u32 = 4;

fn generation(rng: &mut SplitMix64, prompt: usize, new: usize) -> Generation {
    let ids = |rng: &mut SplitMix64, n: usize| (0..n).map(|_| rng.below(49_152) as u32).collect();
    let token_ids: Vec<u32> = ids(rng, new);
    Generation {
        prompt_ids: ids(rng, prompt),
        logprobs: token_ids
            .iter()
            .map(|&t| -((t % 97) as f32) / 10.0)
            .collect(),
        token_ids,
        text: "reflection text of a realistic length, about one line".into(),
        finish_reason: if rng.chance(1, 10) {
            FinishReason::Length
        } else {
            FinishReason::Eos
        },
        seed: rng.next_u64(),
        started_unix_ms: 0,
        seconds: 0.5,
    }
}

/// Writes the round (every attempt fails; retries pass one time in three) and exports it.
fn make_run(dir: &Path) -> u64 {
    let meta = RunMeta {
        model_hash: "0".repeat(64),
        model_files_hash: "1".repeat(64),
        task: "countdown".into(),
        task_hash: "2".repeat(64),
        attempts: 1,
        reflections: G,
        reflection_temperature: None,
        temperature: 0.7,
        top_p: 1.0,
        top_k: 0,
        max_new_tokens: 96,
        seed: 0,
        shard_index: 0,
        shard_count: 1,
        limit: None,
    };
    let store = Store::open(dir, &meta).expect("store");
    let mut rng = SplitMix64::new(7);
    let mut batch = WriteBatch::default();
    for t in 0..TASKS {
        batch.tasks.push(TaskRecord {
            task_index: t,
            id: format!("task-{t}"),
            level: Some("trivial".into()),
            fields_json: "{}".into(),
        });
        batch.attempts.push(AttemptRecord {
            task_index: t,
            attempt: 0,
            generation: generation(&mut rng, 200, 48),
            pass: false,
            reason: "wrong_value".into(),
        });
        for g in 0..G {
            batch.reflections.push(ReflectionRecord {
                task_index: t,
                attempt: 0,
                reflection: g,
                generation: generation(&mut rng, 260, 64),
            });
            let pass = rng.chance(1, 3);
            batch.retries.push(RetryRecord {
                task_index: t,
                attempt: 0,
                reflection: g,
                generation: generation(&mut rng, 340, 48),
                pass,
                reason: if pass { "ok" } else { "wrong_value" }.into(),
            });
        }
        if batch.len() > 20_000 {
            store.write(&batch).expect("write");
            batch.clear();
        }
    }
    store.write(&batch).expect("write");
    export_rollouts(&store, &dir.join(ROLLOUTS_FILE)).expect("export")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = make_run(dir.path());
    let out = dir.path().join("train.parquet");
    let mut group = c.benchmark_group("label");
    group.sample_size(10);
    group.throughput(Throughput::Elements(rows));
    group.bench_function(format!("{rows}_rollout_rows"), |b| {
        b.iter(|| {
            let report = label_runs(&[dir.path().to_path_buf()], &out, &LabelConfig::default())
                .expect("label");
            black_box(report.counts.kept)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
