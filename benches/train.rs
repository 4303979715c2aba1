//! One GRPO optimizer step on SmolLM2-135M f32, CPU: 8 sequences × 256 tokens, the loss on the
//! last 180 tokens of each (`dapo`), clipping, AdamW; against the same step in PyTorch eager with
//! logits only at those positions (`benches/train_peer.py`, TRL's `logits_to_keep`), interleaved
//! step by step in one run: each measured flywheel step is followed by one peer step. Peak
//! memory of each process is printed at the end (`VmHWM` here, `ru_maxrss` there).
//!
//! `FLYWHEEL_BENCH_MICRO_TOKENS=N` splits the step into micro-batches of N padded tokens (the same
//! gradient, accumulated exactly); `FLYWHEEL_BENCH_PEER=0` runs without the peer, so that this
//! process's peak memory is that setting's alone.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flywheel_llama::Llama;
use flywheel_store::TrainExample;
use flywheel_train::optim::{AdamW, AdamWConfig};
use flywheel_train::step::{anchors, micro_batches, update, StepConfig};
use flywheel_train::LossConfig;
use tch::{Device, Kind, Tensor};

const BATCH: usize = 8;
const LENGTH: usize = 256;
const KEEP: usize = 180;

fn model_dir() -> PathBuf {
    let hf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-models/smollm2");
    if !hf.join("model.safetensors").is_file() {
        flywheel_llama::import::import_gguf(&flywheel_model::paths::default_gguf(), &hf, true)
            .expect("import SmolLM2 (run .ci/setup)");
    }
    hf
}

fn examples(vocab: usize) -> Vec<TrainExample> {
    (0..BATCH)
        .map(|i| TrainExample {
            task_index: i as u64,
            task_id: format!("t{i}"),
            level: None,
            attempt: 0,
            reflection: i as u32,
            input_ids: (0..LENGTH)
                .map(|j| ((j * 31 + i * 17 + 5) % (vocab - 3) + 3) as u32)
                .collect(),
            span_start: (LENGTH - KEEP) as u32,
            span_end: LENGTH as u32,
            sampler_logprobs: vec![-1.0; KEEP],
            reward: 0.0,
            advantage: if i % 2 == 0 { 0.9 } else { -0.9 },
            retry_reason: String::new(),
            finish_reason: "eos".into(),
            model_hash: String::new(),
        })
        .collect()
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    seconds: Vec<f64>,
    peak: u64,
}

impl Peer {
    fn start(dir: &std::path::Path) -> Peer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/train_peer.py");
        let mut child = Command::new(flywheel_model::paths::venv().join("bin/python3"))
            .arg(script)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the PyTorch peer (transformers in .venv)");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut ready = String::new();
        stdout.read_line(&mut ready).expect("peer ready");
        eprintln!("train bench: PyTorch peer {}", ready.trim());
        Peer {
            child,
            stdin,
            stdout,
            seconds: vec![],
            peak: 0,
        }
    }

    fn steps(&mut self, n: usize) {
        writeln!(self.stdin, "{n}").expect("peer stdin");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("peer answer");
        let v: serde_json::Value = serde_json::from_str(&line).expect("peer json");
        for s in v["seconds"].as_array().expect("seconds") {
            self.seconds.push(s.as_f64().expect("f64"));
        }
        self.peak = v["peak_rss_bytes"].as_u64().unwrap_or(0);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let dir = model_dir();
    let env = |k: &str| std::env::var(k).ok();
    let micro = env("FLYWHEEL_BENCH_MICRO_TOKENS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(BATCH * LENGTH);
    let mut peer = (env("FLYWHEEL_BENCH_PEER").as_deref() != Some("0")).then(|| Peer::start(&dir));
    let mut model = Llama::load(&dir, Device::Cpu, Kind::Float).expect("load");
    model.vs.unfreeze();
    let mut params: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = AdamW::new(params, AdamWConfig::default());
    let rows = examples(model.config.vocab_size);
    let refs: Vec<&TrainExample> = rows.iter().collect();
    let cfg = StepConfig {
        loss: LossConfig::default(),
        micro_batch_tokens: micro,
        max_grad_norm: 1.0,
        temperature: 0.7,
        max_completion_len: KEEP,
        is_correction: Default::default(),
        is_cap: 3.0,
    };
    let mut ours = Vec::new();
    let mut g = c.benchmark_group("train_step_8x256");
    g.sample_size(10)
        .sampling_mode(criterion::SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(60))
        .throughput(Throughput::Elements((BATCH * LENGTH) as u64));
    g.bench_function("flywheel_vs_pytorch_interleaved", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let batches = micro_batches(
                    &refs,
                    cfg.micro_batch_tokens,
                    model.config.vocab_size,
                    Device::Cpu,
                )
                .expect("pack");
                let a = anchors(&model, None, &batches, cfg.temperature, false);
                update(&model, &mut opt, &batches, &a, &cfg, 1e-6).expect("step");
                let dt = t.elapsed();
                ours.push(dt.as_secs_f64());
                total += dt;
                if let Some(p) = peer.as_mut() {
                    p.steps(1);
                }
            }
            total
        })
    });
    g.finish();
    let o = median(&mut ours);
    let tokens = (BATCH * LENGTH) as f64;
    eprintln!(
        "train bench: micro-batches of {micro} tokens; flywheel median {o:.2} s ({:.0} tokens/s) over {} steps, peak memory {:.2} GB",
        tokens / o,
        ours.len(),
        flywheel_train::trainer::peak_rss() as f64 / 1e9
    );
    if let Some(mut p) = peer {
        let m = median(&mut p.seconds);
        eprintln!(
            "train bench: PyTorch median {m:.2} s ({:.0} tokens/s) interleaved, peak memory {:.2} GB; flywheel/PyTorch throughput {:.2}x",
            tokens / m,
            p.peak as f64 / 1e9,
            m / o
        );
        let _ = p.child.kill();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
