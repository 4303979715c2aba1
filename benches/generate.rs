//! Sampling throughput of the ONNX Runtime engine on SmolLM2-135M f32 (CPU): prompt of about 80
//! tokens, 128 new tokens, temperature 1.0, batch 1 and 32. Aggregate new tokens/s is printed
//! per configuration; the peers (transformers `generate`, onnxruntime-genai) run the same setting
//! through `benches/peers/generate_peers.py`.
//!
//! Needs `.ci/setup`; the model is imported and exported into `target/bench-models/` once. Set
//! `FLYWHEEL_BENCH_EXTRA_ONNX=DIR` to also time another graph of the same model through the same
//! engine (e.g. the one onnxruntime-genai's model builder writes), for a graph-against-graph ratio.
//! Both of our graphs are timed: standard operators (`ours`) and `--fused` (`ours_fused`).
//! `FLYWHEEL_BENCH_ROUNDS=N` replaces criterion's groups by N interleaved rounds over all graphs
//! (better ratios on a noisy machine).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flywheel_generate::{Completion, Driver, Engine, EngineConfig, Request, SamplingParams};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The benchmark prompt: the chat-rendered Countdown attempt prompt of SmolLM2 (about 80 tokens
/// with the template's default system message).
pub const PROMPT: &str = "Using the numbers [19, 36, 55, 7], create an equation that equals 65. You can use basic arithmetic operations (+, -, *, /) and each number can only be used once. Show your reasoning, then give the final equation.";

/// The SmolLM2 export directories: standard operators, then fused operators.
fn model_dirs() -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-models");
    let hf = root.join("smollm2");
    if !hf.join("model.safetensors").is_file() {
        flywheel_llama::import::import_gguf(&flywheel_model::paths::default_gguf(), &hf, true)
            .expect("import SmolLM2 (run .ci/setup)");
    }
    let export = |name: &str, options: flywheel_export::ExportOptions| {
        let onnx = hf.join(name);
        if !onnx.join("model.onnx").is_file() {
            flywheel_export::export(&hf, &onnx, &options, true).expect("export");
        }
        onnx
    };
    (
        export("onnx", flywheel_export::ExportOptions::f32()),
        export("onnx-fused", flywheel_export::ExportOptions::fused()),
    )
}

fn prompt_ids(onnx: &std::path::Path) -> Vec<u32> {
    let hf = onnx.parent().expect("model dir");
    let template = flywheel_model::chat::ChatTemplate::load(hf).expect("template");
    let tok = flywheel_model::tokenizer::load(hf).expect("tokenizer");
    template
        .encode(
            &tok,
            &[serde_json::json!({"role": "user", "content": PROMPT})],
            None,
        )
        .expect("encode")
}

struct Fixed {
    waiting: Vec<Request>,
    tokens: u64,
}

impl Driver for Fixed {
    fn next_request(&mut self) -> Option<Request> {
        self.waiting.pop()
    }
    fn complete(&mut self, c: Completion) -> std::ops::ControlFlow<()> {
        self.tokens += c.tokens.len() as u64;
        std::ops::ControlFlow::Continue(())
    }
}

fn bench(c: &mut Criterion) {
    let (ours, fused) = model_dirs();
    let prompt = prompt_ids(&ours);
    eprintln!("prompt: {} tokens", prompt.len());
    let mut graphs = vec![("ours", ours), ("ours_fused", fused)];
    if let Some(extra) = std::env::var_os("FLYWHEEL_BENCH_EXTRA_ONNX") {
        graphs.push(("extra", PathBuf::from(extra)));
    }
    if let Some(rounds) = std::env::var("FLYWHEEL_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        interleaved(&graphs, &prompt, rounds);
        return;
    }
    for (name, onnx) in &graphs {
        bench_graph(c, name, onnx, &prompt);
    }
}

fn params() -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        max_new_tokens: 128,
        ignore_eos: true,
        ..Default::default()
    }
}

/// The engine as benchmarked: CPU, ONNX Runtime's default thread count.
fn load_engine(onnx: &std::path::Path, batch: usize) -> Engine {
    let config = EngineConfig {
        batch_size: batch,
        ..Default::default()
    };
    Engine::load(onnx, config).expect("engine")
}

/// One generation of `batch` copies of the prompt, each request seeded from `seed`; returns the
/// new tokens and the wall time.
fn generate_once(engine: &mut Engine, prompt: &[u32], batch: usize, seed: u64) -> (u64, Duration) {
    let reqs = (0..batch)
        .map(|k| Request {
            key: k as u64,
            prompt: prompt.to_vec(),
            params: params(),
            seed: seed * 1000 + k as u64,
            keep_kv: false,
        })
        .collect();
    let mut d = Fixed {
        waiting: reqs,
        tokens: 0,
    };
    let t = Instant::now();
    engine.run(&mut d).expect("run");
    (d.tokens, t.elapsed())
}

/// Aggregate new tokens/s of one [`generate_once`].
fn tokens_per_second(engine: &mut Engine, prompt: &[u32], batch: usize, seed: u64) -> f64 {
    let (tokens, dt) = generate_once(engine, prompt, batch, seed);
    tokens as f64 / dt.as_secs_f64()
}

/// `FLYWHEEL_BENCH_ROUNDS=N`: instead of criterion's graph-after-graph groups, alternate the
/// graphs within each round, so slow drift of a shared machine hits all of them alike, and print
/// each graph's median tokens/s and its ratio to the first graph and to the last.
fn interleaved(graphs: &[(&str, PathBuf)], prompt: &[u32], rounds: u64) {
    for batch in [1usize, 32] {
        let mut engines: Vec<Engine> = graphs
            .iter()
            .map(|(_, onnx)| load_engine(onnx, batch))
            .collect();
        let mut rates = vec![Vec::new(); graphs.len()];
        for round in 0..=rounds {
            for (g, engine) in engines.iter_mut().enumerate() {
                let r = tokens_per_second(engine, prompt, batch, round);
                // Round 0 warms every session up and is not counted.
                if round > 0 {
                    rates[g].push(r);
                }
            }
        }
        let medians: Vec<f64> = rates
            .iter_mut()
            .map(|v| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
            .collect();
        for ((name, _), (m, v)) in graphs.iter().zip(medians.iter().zip(&rates)) {
            eprintln!(
                "interleaved batch {batch} {name}: median {m:.1} tokens/s (min {:.1}, max {:.1}, {} runs) | x{:.2} of {} | x{:.2} of {}",
                v[0],
                v[v.len() - 1],
                v.len(),
                m / medians[0],
                graphs[0].0,
                m / medians[medians.len() - 1],
                graphs[graphs.len() - 1].0,
            );
        }
    }
}

fn bench_graph(c: &mut Criterion, name: &str, onnx: &std::path::Path, prompt: &[u32]) {
    let mut group = c.benchmark_group(format!("generate_smollm2_f32_cpu_{name}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    for batch in [1usize, 32] {
        let mut engine = load_engine(onnx, batch);
        group.throughput(Throughput::Elements((batch * 128) as u64));
        group.bench_function(format!("batch{batch}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let (tokens, dt) = generate_once(&mut engine, prompt, batch, i);
                    eprintln!(
                        "{name} batch {batch}: {tokens} new tokens in {:.2} s = {:.1} tokens/s",
                        dt.as_secs_f64(),
                        tokens as f64 / dt.as_secs_f64()
                    );
                    total += dt;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
