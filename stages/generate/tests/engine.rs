//! The sampling engine on the tiny model: greedy output equals the tch reference whatever the
//! batching, seeded sampling is reproducible, log-probs are right, limits and stops hold.

use flywheel_generate::{
    Completion, Driver, Engine, EngineConfig, FinishReason, Request, SamplingParams,
};
use flywheel_llama::{tiny, Llama};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

struct Queue {
    waiting: VecDeque<Request>,
    done: Vec<Completion>,
}

impl Driver for Queue {
    fn next_request(&mut self) -> Option<Request> {
        self.waiting.pop_front()
    }
    fn complete(&mut self, c: Completion) -> std::ops::ControlFlow<()> {
        self.done.push(c);
        std::ops::ControlFlow::Continue(())
    }
}

fn setup(seed: u64) -> (tempfile::TempDir, PathBuf, PathBuf) {
    setup_with(seed, flywheel_export::ExportOptions::f32())
}

fn setup_with(
    seed: u64,
    options: flywheel_export::ExportOptions,
) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("tiny");
    tiny::create(&model, seed).expect("tiny");
    let onnx = dir.path().join("onnx");
    flywheel_export::export(&model, &onnx, &options, false).expect("export");
    (dir, model, onnx)
}

fn prompts() -> Vec<Vec<u32>> {
    // Different lengths so rows are padded differently in every batch.
    (0..7u32)
        .map(|i| (0..(3 + 5 * i)).map(|j| (j * 37 + i * 11) % 256).collect())
        .collect()
}

fn run(onnx: &Path, batch: usize, reqs: Vec<Request>) -> Vec<Completion> {
    let config = EngineConfig {
        batch_size: batch,
        threads: 1,
        refill_min: None,
        ..Default::default()
    };
    run_with(onnx, config, reqs)
}

fn run_with(onnx: &Path, config: EngineConfig, reqs: Vec<Request>) -> Vec<Completion> {
    let mut engine = Engine::load(onnx, config).expect("engine");
    let mut q = Queue {
        waiting: reqs.into(),
        done: Vec::new(),
    };
    let stats = engine.run(&mut q).expect("run");
    assert_eq!(stats.completions as usize, q.done.len());
    q.done.sort_by_key(|c| c.key);
    q.done
}

fn requests(params: &SamplingParams) -> Vec<Request> {
    prompts()
        .into_iter()
        .enumerate()
        .map(|(i, p)| Request {
            key: i as u64,
            prompt: p,
            params: params.clone(),
            seed: 1000 + i as u64,
            keep_kv: false,
        })
        .collect()
}

#[test]
fn greedy_equals_tch_reference_for_every_batching() {
    greedy_equals_tch(setup(21));
}

/// The fused graph (GroupQueryAttention etc.) under the same batching, padding and refills.
#[test]
fn fused_graph_greedy_equals_tch_reference_for_every_batching() {
    let setup = setup_with(21, flywheel_export::ExportOptions::fused());
    let engine = Engine::load(&setup.2, EngineConfig::default()).expect("engine");
    assert!(
        engine.shares_kv_buffer(),
        "fused graphs decode with past and present in one buffer"
    );
    greedy_equals_tch(setup);
}

fn greedy_equals_tch((_dir, model, onnx): (tempfile::TempDir, PathBuf, PathBuf)) {
    // Our exports take `logits_to_keep`: prefill below runs on last-position logits only.
    let engine = Engine::load(&onnx, EngineConfig::default()).expect("engine");
    assert!(engine.last_logits_only());
    drop(engine);
    let llama = Llama::load(&model, tch::Device::Cpu, tch::Kind::Float).expect("load");
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 12,
        ..Default::default()
    };
    let want: Vec<Vec<u32>> = prompts()
        .iter()
        .map(|p| {
            let ids: Vec<i64> = p.iter().map(|&t| i64::from(t)).collect();
            flywheel_llama::generate::greedy(&llama, &ids, 12, &llama.config.eos_ids())
                .tokens
                .iter()
                .map(|&t| t as u32)
                .collect()
        })
        .collect();
    // Batch 1 (no padding), batch 3 (continuous refills with 7 requests), batch 8 (all at once).
    for batch in [1, 3, 8] {
        let got = run(&onnx, batch, requests(&params));
        for (c, w) in got.iter().zip(&want) {
            assert_eq!(&c.tokens, w, "batch {batch}, request {}", c.key);
        }
    }
    // All 7 at once, but prefilled in groups of at most 40 padded tokens (prompts are 3 to 33
    // tokens long), merged into one cache.
    let config = EngineConfig {
        batch_size: 8,
        threads: 1,
        prefill_tokens: 40,
        ..Default::default()
    };
    let got = run_with(&onnx, config, requests(&params));
    for (c, w) in got.iter().zip(&want) {
        assert_eq!(&c.tokens, w, "grouped prefill, request {}", c.key);
    }
}

#[test]
fn greedy_logprobs_are_the_model_log_softmax() {
    let (_dir, model, onnx) = setup(4);
    let llama = Llama::load(&model, tch::Device::Cpu, tch::Kind::Float).expect("load");
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 5,
        ..Default::default()
    };
    let c = &run(&onnx, 2, requests(&params))[3];
    let ids: Vec<i64> = c
        .prompt
        .iter()
        .chain(&c.tokens)
        .map(|&t| i64::from(t))
        .collect();
    let n = ids.len() as i64;
    let logits = llama.forward(
        &tch::Tensor::from_slice(&ids).unsqueeze(0),
        &tch::Tensor::arange(n, (tch::Kind::Int64, tch::Device::Cpu)).unsqueeze(0),
        &tch::Tensor::ones([1, n], (tch::Kind::Int64, tch::Device::Cpu)),
        None,
    );
    let lsm = logits.log_softmax(-1, tch::Kind::Float);
    let p = c.prompt.len() as i64;
    for (j, (&t, &lp)) in c.tokens.iter().zip(&c.logprobs).enumerate() {
        let want = lsm.double_value(&[0, p - 1 + j as i64, i64::from(t)]);
        assert!(
            (f64::from(lp) - want).abs() < 1e-4,
            "token {j}: {lp} vs {want}"
        );
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_seed_dependent() {
    let (_dir, _model, onnx) = setup(8);
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        max_new_tokens: 16,
        ..Default::default()
    };
    let a = run(&onnx, 4, requests(&params));
    let b = run(&onnx, 4, requests(&params));
    assert_eq!(
        a.iter().map(|c| &c.tokens).collect::<Vec<_>>(),
        b.iter().map(|c| &c.tokens).collect::<Vec<_>>()
    );
    let mut other = requests(&params);
    other.iter_mut().for_each(|r| r.seed += 1);
    let c = run(&onnx, 4, other);
    assert_ne!(
        a.iter().map(|c| &c.tokens).collect::<Vec<_>>(),
        c.iter().map(|c| &c.tokens).collect::<Vec<_>>()
    );
    for x in &a {
        assert_eq!(x.tokens.len(), x.logprobs.len());
        assert!(x.logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()));
    }
}

#[test]
fn limits_stops_and_finish_reasons() {
    let (_dir, _model, onnx) = setup(3);
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: 9,
        ..Default::default()
    };
    for c in run(&onnx, 3, requests(&params)) {
        assert!(c.tokens.len() <= 9);
        match c.finish {
            FinishReason::Length => assert_eq!(c.tokens.len(), 9),
            FinishReason::Eos => assert_eq!(c.tokens.last(), Some(&263)),
            FinishReason::Stop => panic!("no stop strings were given"),
        }
    }
    // A stop string that the first generated character always satisfies: every byte-level token
    // decodes to something, so stopping on the text of the first token must stop at once.
    let first = run(
        &onnx,
        1,
        requests(&SamplingParams {
            temperature: 0.0,
            max_new_tokens: 6,
            ..Default::default()
        }),
    );
    let mut reqs = requests(&SamplingParams {
        temperature: 0.0,
        max_new_tokens: 6,
        ..Default::default()
    });
    for (r, f) in reqs.iter_mut().zip(&first) {
        let text = f.text.chars().next().map(String::from).unwrap_or_default();
        r.params.stop = vec![text];
    }
    for (c, f) in run(&onnx, 3, reqs).iter().zip(&first) {
        if !f.text.is_empty() && f.finish != FinishReason::Eos {
            assert_eq!(
                c.finish,
                FinishReason::Stop,
                "request {}: {:?}",
                c.key,
                c.text
            );
            assert!(c.tokens.len() <= f.tokens.len());
        }
    }
}

/// The seven requests, request `i` allowed `max_new(i)` new tokens, on a batch of 3 with the
/// given refill threshold.
fn run_batch3(refill_min: usize, max_new: impl Fn(usize) -> usize) -> flywheel_generate::RunStats {
    let (_dir, _model, onnx) = setup(5);
    let mut engine = Engine::load(
        &onnx,
        EngineConfig {
            batch_size: 3,
            threads: 1,
            refill_min: Some(refill_min),
            ..Default::default()
        },
    )
    .expect("engine");
    let mut reqs = requests(&SamplingParams {
        temperature: 1.0,
        ..Default::default()
    });
    for (i, r) in reqs.iter_mut().enumerate() {
        r.params.max_new_tokens = max_new(i);
    }
    let mut q = Queue {
        waiting: reqs.into(),
        done: Vec::new(),
    };
    let stats = engine.run(&mut q).expect("run");
    assert_eq!(q.done.len(), 7);
    stats
}

#[test]
fn finished_rows_are_replaced_without_wasted_steps() {
    let stats = run_batch3(1, |_| 10);
    // refill_min 1: a freed slot is refilled before the next step, so no step runs a dead row.
    assert_eq!(stats.dead_row_steps, 0);
    assert!(stats.refills >= 3, "{stats:?}");
    assert!(stats.steps < 7 * 10, "rows were not batched: {stats:?}");
}

/// refill_min = batch: a refill waits until every slot is free (it counted dead rows twice
/// once, refilling at half the threshold and copying the cache twice as often).
#[test]
fn refill_waits_for_refill_min_free_slots() {
    // Rows of one wave finish at different steps.
    let stats = run_batch3(3, |i| 2 + 3 * i);
    // Waves of 3, 3 and 1 requests.
    assert_eq!(stats.refills, 3, "{stats:?}");
}

/// Counts completions the driver has not yet been given a step for (where the pipeline saves).
struct Stepped {
    waiting: VecDeque<Request>,
    done: Vec<Completion>,
    unstepped: usize,
    steps: usize,
}

impl Driver for Stepped {
    fn next_request(&mut self) -> Option<Request> {
        self.waiting.pop_front()
    }
    fn complete(&mut self, c: Completion) -> std::ops::ControlFlow<()> {
        self.done.push(c);
        self.unstepped += 1;
        std::ops::ControlFlow::Continue(())
    }
    fn on_step(&mut self, _stats: &flywheel_generate::StepStats) {
        self.unstepped = 0;
        self.steps += 1;
    }
}

/// Requests that finish without a decode step (no new token allowed, or only the one sampled
/// from the prefill) still reach a step, so a driver that saves on steps saves them.
#[test]
fn completions_without_decoding_still_reach_a_step() {
    let (_dir, _model, onnx) = setup(5);
    for max_new_tokens in [0, 1] {
        let params = SamplingParams {
            temperature: 1.0,
            max_new_tokens,
            ..Default::default()
        };
        let mut engine = Engine::load(
            &onnx,
            EngineConfig {
                batch_size: 3,
                threads: 1,
                ..Default::default()
            },
        )
        .expect("engine");
        let mut d = Stepped {
            waiting: requests(&params).into(),
            done: Vec::new(),
            unstepped: 0,
            steps: 0,
        };
        let stats = engine.run(&mut d).expect("run");
        assert_eq!(d.done.len(), 7);
        assert_eq!(stats.steps, 0, "nothing to decode");
        assert_eq!(
            d.unstepped, 0,
            "max_new_tokens {max_new_tokens}: completions left unsaved"
        );
        assert!(d.steps >= 3, "one step per refill at least: {}", d.steps);
        for c in &d.done {
            assert!(c.tokens.len() <= max_new_tokens, "{c:?}");
            if c.tokens.len() == max_new_tokens {
                assert_ne!(c.finish, FinishReason::Stop);
            }
        }
        if max_new_tokens == 0 {
            assert!(d.done.iter().all(|c| c.finish == FinishReason::Length));
        }
    }
}

/// Requests `0..7` (kept), and on each one's completion two requests extending its whole
/// conversation (prompt, generated tokens, three more tokens): keys `100 + i` and `200 + i`,
/// identical prompts, different seeds.
struct Chain {
    waiting: VecDeque<Request>,
    done: Vec<Completion>,
}

impl Driver for Chain {
    fn next_request(&mut self) -> Option<Request> {
        self.waiting.pop_front()
    }
    fn complete(&mut self, c: Completion) -> std::ops::ControlFlow<()> {
        if c.key < 100 {
            let prompt: Vec<u32> = c
                .prompt
                .iter()
                .chain(&c.tokens)
                .copied()
                .chain([5, 6, 7])
                .collect();
            for k in [100, 200] {
                self.waiting.push_back(Request {
                    key: k + c.key,
                    prompt: prompt.clone(),
                    params: c_params(),
                    seed: k + c.key,
                    keep_kv: false,
                });
            }
        }
        self.done.push(c);
        std::ops::ControlFlow::Continue(())
    }
}

fn c_params() -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_new_tokens: 12,
        ..Default::default()
    }
}

fn chain(onnx: &Path, prefix_cache_bytes: usize) -> (Vec<Completion>, flywheel_generate::RunStats) {
    let mut engine = Engine::load(
        onnx,
        EngineConfig {
            batch_size: 3,
            threads: 1,
            prefix_cache_bytes,
            ..Default::default()
        },
    )
    .expect("engine");
    let mut reqs = requests(&c_params());
    reqs.iter_mut().for_each(|r| r.keep_kv = true);
    let mut d = Chain {
        waiting: reqs.into(),
        done: Vec::new(),
    };
    let stats = engine.run(&mut d).expect("run");
    d.done.sort_by_key(|c| c.key);
    (d.done, stats)
}

/// Prompts extending a finished, kept sequence prefill only their new tokens on top of its
/// cache; the greedy continuation equals tch's on the whole prompt, on both graphs, and two
/// requests with the same prompt share one prefill.
#[test]
fn prefix_reuse_equals_full_prefill_and_tch() {
    for options in [
        flywheel_export::ExportOptions::f32(),
        flywheel_export::ExportOptions::fused(),
    ] {
        let (_dir, model, onnx) = setup_with(33, options);
        let (with, stats) = chain(&onnx, 64 << 20);
        let (without, plain) = chain(&onnx, 0);
        assert_eq!(with.len(), 21);
        assert_eq!(plain.prefix_hits, 0);
        // A kept sequence is the prompt plus all generated tokens but the last (never fed);
        // reuse needs at least 16 tokens, which all but the 3-token prompt reach.
        let eligible = with
            .iter()
            .filter(|c| c.key < 100 && c.prompt.len() + c.tokens.len() > 16)
            .count() as u64;
        assert!(eligible >= 5);
        assert_eq!(stats.prefix_hits, 2 * eligible, "{stats:?}");
        assert!(stats.reused_tokens > 0 && stats.prefill_tokens < plain.prefill_tokens);
        let llama = Llama::load(&model, tch::Device::Cpu, tch::Kind::Float).expect("load");
        for (a, b) in with.iter().zip(&without) {
            assert_eq!((a.key, &a.prompt), (b.key, &b.prompt));
            assert_eq!(a.tokens, b.tokens, "request {}", a.key);
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                assert!((x - y).abs() < 1e-4, "request {}: {x} vs {y}", a.key);
            }
            if a.key >= 100 {
                let ids: Vec<i64> = a.prompt.iter().map(|&t| i64::from(t)).collect();
                let want: Vec<u32> =
                    flywheel_llama::generate::greedy(&llama, &ids, 12, &llama.config.eos_ids())
                        .tokens
                        .iter()
                        .map(|&t| t as u32)
                        .collect();
                assert_eq!(a.tokens, want, "request {} against tch", a.key);
            }
        }
    }
}

/// A `--dtype f16` export generates: the cache takes the graph's f16 past type (refills, prefix
/// reuse and all), and greedy decoding mostly agrees with the f32 export of the same weights
/// (f16 rounding may flip a near-tie).
#[test]
fn f16_export_generates_with_an_f16_cache() {
    let (_dir, model, onnx32) = setup(21);
    let onnx16 = model.with_file_name("onnx16");
    let options = flywheel_export::ExportOptions {
        dtype: flywheel_export::ExportDtype::F16,
        ..flywheel_export::ExportOptions::f32()
    };
    flywheel_export::export(&model, &onnx16, &options, false).expect("f16 export");
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 12,
        ignore_eos: true,
        ..Default::default()
    };
    let want = run(&onnx32, 1, requests(&params));
    let (mut same, mut total) = (0usize, 0usize);
    for batch in [1, 3] {
        let got = run(&onnx16, batch, requests(&params));
        for (c, w) in got.iter().zip(&want) {
            assert_eq!(c.tokens.len(), 12, "request {}", c.key);
            assert!(c.logprobs.iter().all(|l| l.is_finite() && *l <= 0.0));
            same += c
                .tokens
                .iter()
                .zip(&w.tokens)
                .filter(|(a, b)| a == b)
                .count();
            total += c.tokens.len();
        }
    }
    assert!(
        same * 10 >= total * 8,
        "f16 greedy agrees on {same}/{total} tokens with f32"
    );
}

/// A row stops when prompt and generated tokens fill the context (as vLLM's `max_model_len` and
/// transformers' `max_length`), not one token before; a prompt that already fills it gets none.
#[test]
fn rows_stop_exactly_at_the_context_limit() {
    for options in [
        flywheel_export::ExportOptions::f32(),
        flywheel_export::ExportOptions::fused(),
    ] {
        let (_dir, _model, onnx) = setup_with(5, options);
        let cfg_path = onnx.join("genai_config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        cfg["model"]["context_length"] = serde_json::json!(20);
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: 100,
            ignore_eos: true,
            ..Default::default()
        };
        let reqs = [15usize, 19, 20]
            .iter()
            .enumerate()
            .map(|(i, &n)| Request {
                key: i as u64,
                prompt: (0..n as u32).map(|t| 3 + t % 200).collect(),
                params: params.clone(),
                seed: 1,
                keep_kv: false,
            })
            .collect();
        let got = run(&onnx, 2, reqs);
        let lens: Vec<usize> = got.iter().map(|c| c.tokens.len()).collect();
        assert_eq!(lens, vec![5, 1, 0], "prompt + generated = context (20)");
        assert!(got.iter().all(|c| c.finish == FinishReason::Length));
    }
}
