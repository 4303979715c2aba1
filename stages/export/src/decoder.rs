//! The Llama-family decoder as an ONNX graph of standard operators (opset 17), with the
//! Optimum / onnxruntime-genai I/O convention: `input_ids`, `attention_mask`, `position_ids`,
//! `past_key_values.{i}.key|value` → `logits`, `present.{i}.key|value`. Dynamic batch and
//! sequence axes, so one graph serves prefill and decode.
//!
//! Weights keep their Hugging Face names and `[out, in]` layout; `MatMul` reads them through a
//! `Transpose` that ONNX Runtime folds into a constant when the session is created.

use crate::graph::{attr_int, attr_ints, value_info, Dim, Elem, Graph};
use flywheel_model::config::ModelConfig;
use flywheel_model::weights::RawTensor;
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
        source: flywheel_model::weights::WeightsError,
    },
    #[error("writing external data: {0}")]
    Io(#[from] std::io::Error),
}

pub fn past_key(i: usize) -> String {
    format!("past_key_values.{i}.key")
}
pub fn past_value(i: usize) -> String {
    format!("past_key_values.{i}.value")
}
pub fn present_key(i: usize) -> String {
    format!("present.{i}.key")
}
pub fn present_value(i: usize) -> String {
    format!("present.{i}.value")
}

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

    fn layer(
        &mut self,
        i: usize,
        x: &str,
        cos: &str,
        sin: &str,
        mask: &str,
    ) -> Result<String, GraphError> {
        let cfg = self.cfg;
        let p = format!("model.layers.{i}");
        self.g.set_scope(format!("{p}.self_attn"));
        let h = self.rms_norm(x, &format!("{p}.input_layernorm"))?;
        let q = self.linear(&h, &format!("{p}.self_attn.q_proj"), cfg.qkv_bias())?;
        let k = self.linear(&h, &format!("{p}.self_attn.k_proj"), cfg.qkv_bias())?;
        let v = self.linear(&h, &format!("{p}.self_attn.v_proj"), cfg.qkv_bias())?;
        let q = self.heads(&q, cfg.num_attention_heads);
        let k = self.heads(&k, cfg.kv_heads());
        let v = self.heads(&v, cfg.kv_heads());
        let q = self.rope(&q, cos, sin);
        let k = self.rope(&k, cos, sin);
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
        let scale = self
            .g
            .const_scalar(self.elem, 1.0 / (cfg.head_dim() as f32).sqrt());
        let mut scores = self.g.op("Mul", &[&scores, &scale], vec![]);
        // Masking and softmax in f32 whatever the model dtype.
        if self.elem != Elem::F32 {
            scores = self.cast(&scores, Elem::F32);
        }
        let masked = self.g.op("Add", &[&scores, mask], vec![]);
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
        let y = self.g.op("Reshape", &[&y, &merge], vec![]);
        let o = self.linear(&y, &format!("{p}.self_attn.o_proj"), cfg.o_bias())?;
        let x = self.g.op("Add", &[x, &o], vec![]);

        self.g.set_scope(format!("{p}.mlp"));
        let h = self.rms_norm(&x, &format!("{p}.post_attention_layernorm"))?;
        let gate = self.linear(&h, &format!("{p}.mlp.gate_proj"), cfg.mlp_bias())?;
        let up = self.linear(&h, &format!("{p}.mlp.up_proj"), cfg.mlp_bias())?;
        let sig = self.g.op("Sigmoid", &[&gate], vec![]);
        let act = self.g.op("Mul", &[&gate, &sig], vec![]);
        let prod = self.g.op("Mul", &[&act, &up], vec![]);
        let down = self.linear(&prod, &format!("{p}.mlp.down_proj"), cfg.mlp_bias())?;
        Ok(self.g.op("Add", &[&x, &down], vec![]))
    }
}

/// Adds the whole decoder (inputs, outputs, nodes, weights) to `g`.
pub fn build(
    g: &mut Graph,
    cfg: &ModelConfig,
    weights: &HashMap<String, Tensor>,
    elem: Elem,
) -> Result<(), GraphError> {
    let (kv, d) = (cfg.kv_heads() as i64, cfg.head_dim() as i64);
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
    g.outputs.push(value_info(
        "logits",
        Elem::F32,
        &[
            Dim::Named("batch_size"),
            Dim::Named("sequence_length"),
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
        axes_1,
        axes_2,
        two,
        eps,
    };

    // Additive mask [b, 1, s, t]: causal over absolute positions (queries sit at the end of the
    // total sequence) and padding from attention_mask. Finite minimum, never -inf, so fully
    // masked padding rows stay finite (as in the tch model).
    let g = &mut *bld.g;
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
    let zero_f = g.const_scalar(Elem::F32, 0.0);
    let min_f = g.const_scalar(Elem::F32, f32::MIN);
    let mask = g.op("Where", &[&keep, &zero_f, &min_f], vec![]);

    // Rotary tables [b, 1, s, d] from position ids, in f32 like the tch model.
    let inv: Vec<f32> = cfg.inv_freq().into_iter().map(|f| f as f32).collect();
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

    let embed = bld.weight("model.embed_tokens.weight")?;
    let mut x = bld
        .g
        .op("Gather", &[&embed, "input_ids"], vec![attr_int("axis", 0)]);
    for i in 0..cfg.num_hidden_layers {
        x = bld.layer(i, &x, &cos, &sin, &mask)?;
    }
    bld.g.set_scope("model");
    let h = bld.rms_norm(&x, "model.norm")?;
    let head = if cfg.tie_word_embeddings {
        embed
    } else {
        bld.weight("lm_head.weight")?
    };
    let head_t = bld
        .g
        .op("Transpose", &[&head], vec![attr_ints("perm", &[1, 0])]);
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
