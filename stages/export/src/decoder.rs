//! The Llama-family decoder as an ONNX graph of standard operators (opset 17), with the
//! Optimum / onnxruntime-genai I/O convention: `input_ids`, `attention_mask`, `position_ids`,
//! `past_key_values.{i}.key|value` → `logits`, `present.{i}.key|value`. Dynamic batch and
//! sequence axes, so one graph serves prefill and decode.
//!
//! Weights keep their Hugging Face names and `[out, in]` layout; `MatMul` reads them through a
//! `Transpose` that ONNX Runtime folds into a constant when the session is created.
//!
//! [`Ops::Fused`] swaps attention and the norms for ONNX Runtime's fused operators
//! (`RotaryEmbedding`, `GroupQueryAttention`, `SkipSimplifiedLayerNormalization`) with the same
//! inputs and outputs: faster in ONNX Runtime, but no longer a standard-only graph.

use crate::graph::{attr_float, attr_int, attr_ints, value_info, Dim, Elem, Graph};
use flywheel_llama::weights::RawTensor;
use flywheel_model::config::ModelConfig;
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// Errors while building the graph.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("tensor `{0}` is missing from the model")]
    Missing(String),
    #[error("tensor `{tensor}`: {source}")]
    Weights {
        tensor: String,
        source: flywheel_llama::weights::WeightsError,
    },
    #[error("writing external data: {0}")]
    Io(#[from] std::io::Error),
    #[error("fused operators: {0}")]
    Unfusable(String),
}

/// Which operators the graph is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ops {
    /// Standard ONNX operators only (opset 17); valid under `onnx.checker`.
    #[default]
    Standard,
    /// ONNX Runtime's `com.microsoft` fused operators for attention and norms.
    Fused,
}

/// The tensors every layer's attention reads, built once.
struct AttnInputs {
    /// Additive mask `[b, 1, s, t]` (f32 for the standard path, the model dtype when fused).
    mask: String,
    /// Standard path: rotary tables `[b, 1, s, d]`.
    cos: String,
    sin: String,
    /// Fused path: rotary caches `[max_positions, d/2]`, `seqlens_k` and `total_sequence_length`.
    seqlens_k: String,
    total_len: String,
}

pub use flywheel_runtime::names::{
    past_key, past_value, present_key, present_value, LOGITS_TO_KEEP, SHARE_BUFFER_KEY,
};

pub fn torch_kind(elem: Elem) -> Kind {
    match elem {
        Elem::F16 => Kind::Half,
        Elem::Bf16 => Kind::BFloat16,
        _ => Kind::Float,
    }
}

struct Builder<'a> {
    g: &'a mut Graph,
    cfg: &'a ModelConfig,
    weights: &'a HashMap<String, Tensor>,
    elem: Elem,
    ops: Ops,
    // Shared constants.
    axes_1: String,
    axes_2: String,
    two: String,
    eps: String,
}

impl Builder<'_> {
    /// Adds the named model weight as an initializer in the export dtype.
    fn weight(&mut self, name: &str) -> Result<String, GraphError> {
        let t = self
            .weights
            .get(name)
            .ok_or_else(|| GraphError::Missing(name.to_owned()))?;
        let raw =
            RawTensor::from_tensor(name, &t.to_kind(torch_kind(self.elem))).map_err(|source| {
                GraphError::Weights {
                    tensor: name.to_owned(),
                    source,
                }
            })?;
        let dims: Vec<i64> = raw.shape.iter().map(|&d| d as i64).collect();
        Ok(self.g.initializer(name, self.elem, &dims, &raw.data)?)
    }

    fn cast(&mut self, x: &str, to: Elem) -> String {
        self.g
            .op("Cast", &[x], vec![attr_int("to", to.onnx() as i64)])
    }

    /// `x Wᵀ (+ b)` for the Hugging Face linear layer `prefix`.
    fn linear(&mut self, x: &str, prefix: &str, bias: bool) -> Result<String, GraphError> {
        let w = self.weight(&format!("{prefix}.weight"))?;
        let wt = self
            .g
            .op("Transpose", &[&w], vec![attr_ints("perm", &[1, 0])]);
        let y = self.g.op("MatMul", &[x, &wt], vec![]);
        if !bias {
            return Ok(y);
        }
        let b = self.weight(&format!("{prefix}.bias"))?;
        Ok(self.g.op("Add", &[&y, &b], vec![]))
    }

    /// Several linear layers on the same input as one `MatMul` over their concatenated weights
    /// (folded into one constant by ONNX Runtime at load), split back into one output each of
    /// the given widths. The weights keep their own names in the file.
    fn linear_packed<const N: usize>(
        &mut self,
        x: &str,
        prefixes: [String; N],
        sizes: [i64; N],
        bias: bool,
    ) -> Result<[String; N], GraphError> {
        let mut ws = Vec::with_capacity(N);
        let mut bs = Vec::with_capacity(N);
        for p in &prefixes {
            ws.push(self.weight(&format!("{p}.weight"))?);
            if bias {
                bs.push(self.weight(&format!("{p}.bias"))?);
            }
        }
        let w = self
            .g
            .op("Concat", &str_refs(&ws), vec![attr_int("axis", 0)]);
        let wt = self
            .g
            .op("Transpose", &[&w], vec![attr_ints("perm", &[1, 0])]);
        let mut y = self.g.op("MatMul", &[x, &wt], vec![]);
        if bias {
            let b = self
                .g
                .op("Concat", &str_refs(&bs), vec![attr_int("axis", 0)]);
            y = self.g.op("Add", &[&y, &b], vec![]);
        }
        let split = self.g.const_i64(&sizes, &[N as i64]);
        let mut outs = self
            .g
            .op_n("Split", &[&y, &split], vec![attr_int("axis", -1)], N)
            .into_iter();
        Ok(std::array::from_fn(|_| outs.next().unwrap_or_default()))
    }

    /// RMSNorm computed in f32 (as the tch model and transformers do), in the pattern
    /// Pow → ReduceMean → Add → Sqrt → Div that ONNX Runtime fuses.
    fn rms_norm(&mut self, x: &str, prefix: &str) -> Result<String, GraphError> {
        let w = self.weight(&format!("{prefix}.weight"))?;
        let xf = if self.elem == Elem::F32 {
            x.to_owned()
        } else {
            self.cast(x, Elem::F32)
        };
        let two = self.two.clone();
        let eps = self.eps.clone();
        let p = self.g.op("Pow", &[&xf, &two], vec![]);
        let m = self.g.op(
            "ReduceMean",
            &[&p],
            vec![attr_ints("axes", &[-1]), attr_int("keepdims", 1)],
        );
        let a = self.g.op("Add", &[&m, &eps], vec![]);
        let s = self.g.op("Sqrt", &[&a], vec![]);
        let mut d = self.g.op("Div", &[&xf, &s], vec![]);
        if self.elem != Elem::F32 {
            d = self.cast(&d, self.elem);
        }
        Ok(self.g.op("Mul", &[&d, &w], vec![]))
    }

    /// `x·cos + rotate_half(x)·sin` for `x [b, heads, s, d]`.
    fn rope(&mut self, x: &str, cos: &str, sin: &str) -> String {
        let d = self.cfg.head_dim() as i64;
        let axis = self.g.const_i64(&[3], &[1]);
        let (s0, s1, s2) = (
            self.g.const_i64(&[0], &[1]),
            self.g.const_i64(&[d / 2], &[1]),
            self.g.const_i64(&[d], &[1]),
        );
        let x1 = self.g.op("Slice", &[x, &s0, &s1, &axis], vec![]);
        let x2 = self.g.op("Slice", &[x, &s1, &s2, &axis], vec![]);
        let n2 = self.g.op("Neg", &[&x2], vec![]);
        let rot = self.g.op("Concat", &[&n2, &x1], vec![attr_int("axis", 3)]);
        let a = self.g.op("Mul", &[x, cos], vec![]);
        let b = self.g.op("Mul", &[&rot, sin], vec![]);
        self.g.op("Add", &[&a, &b], vec![])
    }

    /// `[b, s, heads·d]` → `[b, heads, s, d]`.
    fn heads(&mut self, x: &str, n: usize) -> String {
        let shape = self
            .g
            .const_i64(&[0, 0, n as i64, self.cfg.head_dim() as i64], &[4]);
        let r = self.g.op("Reshape", &[x, &shape], vec![]);
        self.g
            .op("Transpose", &[&r], vec![attr_ints("perm", &[0, 2, 1, 3])])
    }

    /// Repeats key/value heads for grouped-query attention: `[b, kv, t, d]` → `[b, heads, t, d]`.
    fn repeat_kv(&mut self, x: &str) -> String {
        let (h, kv) = (
            self.cfg.num_attention_heads as i64,
            self.cfg.kv_heads() as i64,
        );
        if h == kv {
            return x.to_owned();
        }
        let axes_2 = self.axes_2.clone();
        let u = self.g.op("Unsqueeze", &[x, &axes_2], vec![]);
        let rep = self.g.const_i64(&[1, 1, h / kv, 1, 1], &[5]);
        let e = self.g.op("Expand", &[&u, &rep], vec![]);
        let shape = self
            .g
            .const_i64(&[0, h, -1, self.cfg.head_dim() as i64], &[4]);
        self.g.op("Reshape", &[&e, &shape], vec![])
    }

    /// Self-attention of layer `i` on the normed input `h`, up to and including `o_proj`.
    fn attention(&mut self, i: usize, h: &str, a: &AttnInputs) -> Result<String, GraphError> {
        let cfg = self.cfg;
        let p = format!("model.layers.{i}.self_attn");
        self.g.set_scope(&p);
        let proj = |x: &str| format!("{p}.{x}_proj");
        let (q, k, v) = if self.ops == Ops::Fused {
            let sizes = [cfg.num_attention_heads, cfg.kv_heads(), cfg.kv_heads()]
                .map(|n| (n * cfg.head_dim()) as i64);
            let [q, k, v] =
                self.linear_packed(h, [proj("q"), proj("k"), proj("v")], sizes, cfg.qkv_bias())?;
            (q, k, v)
        } else {
            (
                self.linear(h, &proj("q"), cfg.qkv_bias())?,
                self.linear(h, &proj("k"), cfg.qkv_bias())?,
                self.linear(h, &proj("v"), cfg.qkv_bias())?,
            )
        };
        let scale = 1.0 / (cfg.head_dim() as f32).sqrt();
        let y = match self.ops {
            Ops::Fused => {
                let rotary = |g: &mut Graph, x: &str, heads: usize| {
                    g.contrib(
                        "RotaryEmbedding",
                        &[x, "position_ids", &a.cos, &a.sin],
                        vec![
                            attr_int("num_heads", heads as i64),
                            attr_int("interleaved", 0),
                        ],
                        1,
                    )
                    .remove(0)
                };
                let q = rotary(self.g, &q, cfg.num_attention_heads);
                let k = rotary(self.g, &k, cfg.kv_heads());
                // Rotation happens above, with the true positions: GQA's own rotary ignores
                // `position_ids` on a first prompt, which would shift left-padded rows.
                let out = self.g.fresh_name("GroupQueryAttention_output");
                self.g.contrib_to(
                    "GroupQueryAttention",
                    &[
                        &q,
                        &k,
                        &v,
                        &past_key(i),
                        &past_value(i),
                        &a.seqlens_k,
                        &a.total_len,
                        "",
                        "",
                        "",
                        &a.mask,
                    ],
                    vec![
                        attr_int("num_heads", cfg.num_attention_heads as i64),
                        attr_int("kv_num_heads", cfg.kv_heads() as i64),
                        attr_float("scale", scale),
                        attr_int("do_rotary", 0),
                    ],
                    &[out.clone(), present_key(i), present_value(i)],
                );
                out
            }
            Ops::Standard => self.attention_standard(i, &q, &k, &v, scale, a),
        };
        self.linear(&y, &format!("{p}.o_proj"), cfg.o_bias())
    }

    fn attention_standard(
        &mut self,
        i: usize,
        q: &str,
        k: &str,
        v: &str,
        scale: f32,
        a: &AttnInputs,
    ) -> String {
        let cfg = self.cfg;
        let q = self.heads(q, cfg.num_attention_heads);
        let k = self.heads(k, cfg.kv_heads());
        let v = self.heads(v, cfg.kv_heads());
        let q = self.rope(&q, &a.cos, &a.sin);
        let k = self.rope(&k, &a.cos, &a.sin);
        let pk = self.g.op_to(
            "Concat",
            &[&past_key(i), &k],
            vec![attr_int("axis", 2)],
            &present_key(i),
        );
        let pv = self.g.op_to(
            "Concat",
            &[&past_value(i), &v],
            vec![attr_int("axis", 2)],
            &present_value(i),
        );
        let ke = self.repeat_kv(&pk);
        let ve = self.repeat_kv(&pv);
        let kt = self
            .g
            .op("Transpose", &[&ke], vec![attr_ints("perm", &[0, 1, 3, 2])]);
        let scores = self.g.op("MatMul", &[&q, &kt], vec![]);
        let scale = self.g.const_scalar(self.elem, scale);
        let mut scores = self.g.op("Mul", &[&scores, &scale], vec![]);
        // Masking and softmax in f32 whatever the model dtype.
        if self.elem != Elem::F32 {
            scores = self.cast(&scores, Elem::F32);
        }
        let masked = self.g.op("Add", &[&scores, &a.mask], vec![]);
        let mut probs = self.g.op("Softmax", &[&masked], vec![attr_int("axis", -1)]);
        if self.elem != Elem::F32 {
            probs = self.cast(&probs, self.elem);
        }
        let y = self.g.op("MatMul", &[&probs, &ve], vec![]);
        let y = self
            .g
            .op("Transpose", &[&y], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let merge = self.g.const_i64(
            &[0, 0, (cfg.num_attention_heads * cfg.head_dim()) as i64],
            &[3],
        );
        self.g.op("Reshape", &[&y, &merge], vec![])
    }

    /// The SwiGLU MLP of layer `i` on the normed input `h`.
    fn mlp(&mut self, i: usize, h: &str) -> Result<String, GraphError> {
        let p = format!("model.layers.{i}.mlp");
        self.g.set_scope(&p);
        let bias = self.cfg.mlp_bias();
        let (gate, up) = if self.ops == Ops::Fused {
            let i = self.cfg.intermediate_size as i64;
            let names = [format!("{p}.gate_proj"), format!("{p}.up_proj")];
            let [gate, up] = self.linear_packed(h, names, [i, i], bias)?;
            (gate, up)
        } else {
            (
                self.linear(h, &format!("{p}.gate_proj"), bias)?,
                self.linear(h, &format!("{p}.up_proj"), bias)?,
            )
        };
        let sig = self.g.op("Sigmoid", &[&gate], vec![]);
        let act = self.g.op("Mul", &[&gate, &sig], vec![]);
        let prod = self.g.op("Mul", &[&act, &up], vec![]);
        self.linear(&prod, &format!("{p}.down_proj"), bias)
    }

    /// `(x + y, rms_norm(x + y))`: one `SkipSimplifiedLayerNormalization` when fused.
    fn add_norm(&mut self, x: &str, y: &str, norm: &str) -> Result<(String, String), GraphError> {
        if self.ops == Ops::Standard {
            let sum = self.g.op("Add", &[x, y], vec![]);
            let normed = self.rms_norm(&sum, norm)?;
            return Ok((sum, normed));
        }
        let w = self.weight(&format!("{norm}.weight"))?;
        let normed = self.g.fresh_name("SkipSimplifiedLayerNormalization_output");
        let sum = self.g.fresh_name("SkipSimplifiedLayerNormalization_sum");
        self.g.contrib_to(
            "SkipSimplifiedLayerNormalization",
            &[y, x, &w],
            vec![attr_float("epsilon", self.cfg.rms_norm_eps as f32)],
            &[normed.clone(), String::new(), String::new(), sum.clone()],
        );
        Ok((sum, normed))
    }
}

/// Adds the whole decoder (inputs, outputs, nodes, weights) to `g`.
pub fn build(
    g: &mut Graph,
    cfg: &ModelConfig,
    weights: &HashMap<String, Tensor>,
    elem: Elem,
    ops: Ops,
) -> Result<(), GraphError> {
    let (kv, d) = (cfg.kv_heads() as i64, cfg.head_dim() as i64);
    // ONNX Runtime's CPU GroupQueryAttention kernel refuses other head sizes.
    if ops == Ops::Fused && !cfg.head_dim().is_multiple_of(16) {
        return Err(GraphError::Unfusable(format!(
            "GroupQueryAttention needs a head size that is a multiple of 16, this model's is {}; \
             export without --fused",
            cfg.head_dim()
        )));
    }
    g.inputs.push(value_info(
        "input_ids",
        Elem::I64,
        &[Dim::Named("batch_size"), Dim::Named("sequence_length")],
    ));
    g.inputs.push(value_info(
        "attention_mask",
        Elem::I64,
        &[
            Dim::Named("batch_size"),
            Dim::Named("total_sequence_length"),
        ],
    ));
    g.inputs.push(value_info(
        "position_ids",
        Elem::I64,
        &[Dim::Named("batch_size"), Dim::Named("sequence_length")],
    ));
    for i in 0..cfg.num_hidden_layers {
        for name in [past_key(i), past_value(i)] {
            g.inputs.push(value_info(
                &name,
                elem,
                &[
                    Dim::Named("batch_size"),
                    Dim::Fixed(kv),
                    Dim::Named("past_sequence_length"),
                    Dim::Fixed(d),
                ],
            ));
        }
    }
    g.inputs.push(value_info(LOGITS_TO_KEEP, Elem::I64, &[]));
    g.outputs.push(value_info(
        "logits",
        Elem::F32,
        &[
            Dim::Named("batch_size"),
            Dim::Named("logits_length"),
            Dim::Fixed(cfg.vocab_size as i64),
        ],
    ));
    for i in 0..cfg.num_hidden_layers {
        for name in [present_key(i), present_value(i)] {
            g.outputs.push(value_info(
                &name,
                elem,
                &[
                    Dim::Named("batch_size"),
                    Dim::Fixed(kv),
                    Dim::Named("total_sequence_length"),
                    Dim::Fixed(d),
                ],
            ));
        }
    }

    g.set_scope("model");
    let axes_1 = g.const_i64(&[1], &[1]);
    let axes_2 = g.const_i64(&[2], &[1]);
    let two = g.const_scalar(Elem::F32, 2.0);
    let eps = g.const_scalar(Elem::F32, cfg.rms_norm_eps as f32);
    let mut bld = Builder {
        g,
        cfg,
        weights,
        elem,
        ops,
        axes_1,
        axes_2,
        two,
        eps,
    };
    let attn = attention_inputs(&mut bld)?;

    let embed = bld.weight("model.embed_tokens.weight")?;
    let x = bld
        .g
        .op("Gather", &[&embed, "input_ids"], vec![attr_int("axis", 0)]);
    // The residual stream `x` and its normed copy `h` for the next sublayer.
    let mut h = bld.rms_norm(&x, "model.layers.0.input_layernorm")?;
    let mut x = x;
    for i in 0..cfg.num_hidden_layers {
        let o = bld.attention(i, &h, &attn)?;
        (x, h) = bld.add_norm(
            &x,
            &o,
            &format!("model.layers.{i}.post_attention_layernorm"),
        )?;
        let m = bld.mlp(i, &h)?;
        let next = if i + 1 < cfg.num_hidden_layers {
            format!("model.layers.{}.input_layernorm", i + 1)
        } else {
            "model.norm".to_owned()
        };
        (x, h) = bld.add_norm(&x, &m, &next)?;
    }
    bld.g.set_scope("model");
    let head = if cfg.tie_word_embeddings {
        embed
    } else {
        bld.weight("lm_head.weight")?
    };
    let head_t = bld
        .g
        .op("Transpose", &[&head], vec![attr_ints("perm", &[1, 0])]);
    // `logits_to_keep` (as in transformers): only the last k positions go through the LM head;
    // 0 keeps them all. It is an overridable initializer defaulting to 0, so runtimes that do
    // not know it (onnxruntime-genai) get every position, while a sampler that needs only the
    // last position skips a [b, s, vocab] product and buffer at prefill.
    let keep = bld
        .g
        .initializer(LOGITS_TO_KEEP, Elem::I64, &[], &0i64.to_le_bytes())?;
    let starts = bld.g.op("Neg", &[&keep], vec![]);
    let axes_0 = bld.g.const_i64(&[0], &[1]);
    let starts = bld.g.op("Unsqueeze", &[&starts, &axes_0], vec![]);
    let ends = bld.g.const_i64(&[i64::MAX], &[1]);
    let h = bld
        .g
        .op("Slice", &[&h, &starts, &ends, &bld.axes_1], vec![]);
    if elem == Elem::F32 {
        bld.g.op_to("MatMul", &[&h, &head_t], vec![], "logits");
    } else {
        let l = bld.g.op("MatMul", &[&h, &head_t], vec![]);
        bld.g.op_to(
            "Cast",
            &[&l],
            vec![attr_int("to", Elem::F32.onnx() as i64)],
            "logits",
        );
    }
    Ok(())
}

fn str_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The smallest finite value of `elem`, for additive masks (never -inf, so fully masked padding
/// rows stay finite, as in the tch model).
fn finite_min(elem: Elem) -> f32 {
    match elem {
        Elem::F16 => half::f16::MIN.to_f32(),
        Elem::Bf16 => half::bf16::MIN.to_f32(),
        _ => f32::MIN,
    }
}

/// The mask and rotary inputs shared by all layers.
fn attention_inputs(bld: &mut Builder) -> Result<AttnInputs, GraphError> {
    let (cfg, elem, ops) = (bld.cfg, bld.elem, bld.ops);
    let g = &mut *bld.g;
    // Additive mask [b, 1, s, t]: causal over absolute positions (queries sit at the end of the
    // total sequence) and padding from attention_mask.
    let one_idx = g.const_i64(&[1], &[]);
    let zero = g.const_i64(&[0], &[]);
    let one = g.const_i64(&[1], &[]);
    let shape_ids = g.op("Shape", &["input_ids"], vec![]);
    let seq = g.op("Gather", &[&shape_ids, &one_idx], vec![attr_int("axis", 0)]);
    let shape_mask = g.op("Shape", &["attention_mask"], vec![]);
    let total = g.op(
        "Gather",
        &[&shape_mask, &one_idx],
        vec![attr_int("axis", 0)],
    );
    let past_len = g.op("Sub", &[&total, &seq], vec![]);
    let q_range = g.op("Range", &[&zero, &seq, &one], vec![]);
    let q_pos = g.op("Add", &[&q_range, &past_len], vec![]);
    let q_pos = g.op("Unsqueeze", &[&q_pos, &bld.axes_1], vec![]);
    let k_range = g.op("Range", &[&zero, &total, &one], vec![]);
    let axes_0 = g.const_i64(&[0], &[1]);
    let k_pos = g.op("Unsqueeze", &[&k_range, &axes_0], vec![]);
    let causal = g.op("LessOrEqual", &[&k_pos, &q_pos], vec![]);
    let pad = g.op(
        "Cast",
        &["attention_mask"],
        vec![attr_int("to", Elem::Bool.onnx() as i64)],
    );
    let axes_12 = g.const_i64(&[1, 2], &[2]);
    let pad = g.op("Unsqueeze", &[&pad, &axes_12], vec![]);
    let keep = g.op("And", &[&causal, &pad], vec![]);
    // The standard path adds the mask to f32 scores; GroupQueryAttention wants the model dtype.
    let mask_elem = if ops == Ops::Fused { elem } else { Elem::F32 };
    let zero_f = g.const_scalar(mask_elem, 0.0);
    let min_f = g.const_scalar(mask_elem, finite_min(mask_elem));
    let mask = g.op("Where", &[&keep, &zero_f, &min_f], vec![]);

    let inv: Vec<f64> = cfg.inv_freq();
    if ops == Ops::Fused {
        // Every row is right-aligned to the full length; padding is masked by the bias above.
        let batch = g.op("Gather", &[&shape_ids, &axes_0], vec![attr_int("axis", 0)]);
        let last = g.op("Sub", &[&total, &one], vec![]);
        let last = g.op("Expand", &[&last, &batch], vec![]);
        let i32_ = attr_int("to", Elem::I32.onnx() as i64);
        let seqlens_k = g.op("Cast", &[&last], vec![i32_.clone()]);
        let total_len = g.op("Cast", &[&total], vec![i32_]);
        // Rotary caches [positions, d/2] for RotaryEmbedding, computed in f64.
        let n = cfg.max_position_embeddings.max(1);
        let table = |f: fn(f64) -> f64| -> Vec<f32> {
            (0..n)
                .flat_map(|p| inv.iter().map(move |w| f(p as f64 * w) as f32))
                .collect()
        };
        let dims = [n as i64, inv.len() as i64];
        let cos = cache(g, "rotary.cos_cache", elem, &dims, &table(f64::cos))?;
        let sin = cache(g, "rotary.sin_cache", elem, &dims, &table(f64::sin))?;
        return Ok(AttnInputs {
            mask,
            cos,
            sin,
            seqlens_k,
            total_len,
        });
    }

    // Rotary tables [b, 1, s, d] from position ids, in f32 like the tch model.
    let inv: Vec<f32> = inv.into_iter().map(|f| f as f32).collect();
    let inv_freq = g.const_f32(&inv, &[inv.len() as i64]);
    let pos = g.op(
        "Cast",
        &["position_ids"],
        vec![attr_int("to", Elem::F32.onnx() as i64)],
    );
    let pos = g.op("Unsqueeze", &[&pos, &bld.axes_2], vec![]);
    let freqs = g.op("Mul", &[&pos, &inv_freq], vec![]);
    let emb = g.op("Concat", &[&freqs, &freqs], vec![attr_int("axis", -1)]);
    let cos = g.op("Cos", &[&emb], vec![]);
    let sin = g.op("Sin", &[&emb], vec![]);
    let mut cos = g.op("Unsqueeze", &[&cos, &bld.axes_1], vec![]);
    let mut sin = g.op("Unsqueeze", &[&sin, &bld.axes_1], vec![]);
    if elem != Elem::F32 {
        cos = bld.cast(&cos, elem);
        sin = bld.cast(&sin, elem);
    }
    Ok(AttnInputs {
        mask,
        cos,
        sin,
        seqlens_k: String::new(),
        total_len: String::new(),
    })
}

/// A constant table stored as an initializer in `elem`.
fn cache(
    g: &mut Graph,
    name: &str,
    elem: Elem,
    dims: &[i64],
    values: &[f32],
) -> Result<String, GraphError> {
    let bytes: Vec<u8> = match elem {
        Elem::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        Elem::Bf16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    Ok(g.initializer(name, elem, dims, &bytes)?)
}
