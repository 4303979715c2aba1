//! The Llama family in libtorch (tch): Llama 2/3.x, SmolLM2, Mistral, Qwen2/2.5.
//!
//! RMSNorm, rotary embeddings (theta and Llama 3 scaling from the config), grouped-query
//! attention with optional q/k/v biases, SwiGLU MLP, tied or untied embeddings, and an optional
//! KV cache. Variable names are the Hugging Face checkpoint names, so safetensors, tch and ONNX
//! initializers share one naming.

use crate::weights::{Weights, WeightsError};
use flywheel_model::config::ModelConfig;
use std::path::{Path, PathBuf};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] flywheel_model::config::ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{dir}: tensor `{tensor}` is missing{}", if *others > 0 { format!(" (and {others} more)") } else { String::new() })]
    Missing {
        dir: PathBuf,
        tensor: String,
        others: usize,
    },
    #[error("{file}: tensor `{tensor}` has shape {found:?}, the config implies {expected:?}")]
    Shape {
        file: PathBuf,
        tensor: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("{what}: {source}")]
    Torch { what: String, source: tch::TchError },
}

/// Additive-mask value for masked positions: finite (unlike -inf) so a fully masked row, such as
/// a left-padding query, yields a harmless uniform softmax instead of NaNs that leak through 0·NaN.
fn mask_min(kind: Kind) -> f64 {
    match kind {
        Kind::BFloat16 => -3.38e38,
        Kind::Half => -65504.0,
        _ => f32::MIN as f64,
    }
}

fn linear(p: &nn::Path, out: usize, inp: usize, bias: bool) -> Linear {
    Linear {
        ws: p.var("weight", &[out as i64, inp as i64], Init::Const(0.0)),
        bs: bias.then(|| p.var("bias", &[out as i64], Init::Const(0.0))),
    }
}

/// A bias-optional linear layer, `y = x Wᵀ + b`, weight `[out, in]` as in PyTorch.
pub struct Linear {
    pub ws: Tensor,
    pub bs: Option<Tensor>,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.ws, self.bs.as_ref())
    }
}

pub struct RmsNorm {
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(p: &nn::Path, dim: usize, eps: f64) -> Self {
        Self {
            weight: p.var("weight", &[dim as i64], Init::Const(1.0)),
            eps,
        }
    }
    /// Computed in f32 whatever the model dtype, as transformers does.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let xf = x.to_kind(Kind::Float);
        let var = xf.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = xf * (var + self.eps).rsqrt();
        &self.weight * normed.to_kind(kind)
    }
}

/// Rotary embedding tables computed on the fly from position ids.
pub struct Rotary {
    inv_freq: Tensor,
}

impl Rotary {
    pub fn new(cfg: &ModelConfig, device: Device) -> Self {
        let inv: Vec<f32> = cfg.inv_freq().into_iter().map(|f| f as f32).collect();
        Self {
            inv_freq: Tensor::from_slice(&inv).to_device(device),
        }
    }
    /// (cos, sin), each `[batch, 1, seq, head_dim]` in `kind`.
    pub fn tables(&self, position_ids: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = position_ids.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq;
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(&[&x2.neg(), &x1], 3)
}

pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let (h, kv, d) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let bias = cfg.qkv_bias();
        Self {
            q_proj: linear(&(p / "q_proj"), h * d, cfg.hidden_size, bias),
            k_proj: linear(&(p / "k_proj"), kv * d, cfg.hidden_size, bias),
            v_proj: linear(&(p / "v_proj"), kv * d, cfg.hidden_size, bias),
            o_proj: linear(&(p / "o_proj"), cfg.hidden_size, h * d, cfg.o_bias()),
            heads: h as i64,
            kv_heads: kv as i64,
            head_dim: d as i64,
        }
    }

    /// `x [b, s, hidden]`, `mask` additive `[b, 1, s, past+s]` (`None`: causal only, no cache,
    /// which lets SDPA use its memory-efficient kernel); appends to `cache` when given.
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor {
        let (b, s) = (x.size()[0], x.size()[1]);
        let split = |t: Tensor, n: i64| t.view([b, s, n, self.head_dim]).transpose(1, 2);
        let q = split(self.q_proj.forward(x), self.heads);
        let k = split(self.k_proj.forward(x), self.kv_heads);
        let v = split(self.v_proj.forward(x), self.kv_heads);
        let q = &q * cos + rotate_half(&q) * sin;
        let k = &k * cos + rotate_half(&k) * sin;
        let (k, v) = match cache {
            Some(c) => c.append(k, v),
            None => (k, v),
        };
        // SDPA broadcasts the key/value heads over their query groups itself (no copy of the cache).
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            0.0,
            mask.is_none(),
            None,
            self.heads != self.kv_heads,
        );
        self.o_proj.forward(
            &y.transpose(1, 2)
                .reshape([b, s, self.heads * self.head_dim]),
        )
    }
}

pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias());
        Self {
            gate_proj: linear(&(p / "gate_proj"), i, h, b),
            up_proj: linear(&(p / "up_proj"), i, h, b),
            down_proj: linear(&(p / "down_proj"), h, i, b),
        }
    }
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj
            .forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }
}

pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl DecoderLayer {
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Self {
        Self {
            input_layernorm: RmsNorm::new(
                &(p / "input_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            ),
            self_attn: Attention::new(&(p / "self_attn"), cfg),
            post_attention_layernorm: RmsNorm::new(
                &(p / "post_attention_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            ),
            mlp: Mlp::new(&(p / "mlp"), cfg),
        }
    }
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor {
        let h = x + self
            .self_attn
            .forward(&self.input_layernorm.forward(x), cos, sin, mask, cache);
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h))
    }
}

/// Keys and values of one layer, `[batch, kv_heads, past, head_dim]`.
#[derive(Default)]
pub struct LayerCache {
    kv: Option<(Tensor, Tensor)>,
}

impl LayerCache {
    fn append(&mut self, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let (k, v) = match self.kv.take() {
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
            None => (k, v),
        };
        self.kv = Some((k.shallow_clone(), v.shallow_clone()));
        (k, v)
    }
    pub fn keys_values(&self) -> Option<&(Tensor, Tensor)> {
        self.kv.as_ref()
    }
}

/// The KV cache of a whole model for one batch.
pub struct KvCache {
    pub layers: Vec<LayerCache>,
}

impl KvCache {
    pub fn new(cfg: &ModelConfig) -> Self {
        Self {
            layers: (0..cfg.num_hidden_layers)
                .map(|_| LayerCache::default())
                .collect(),
        }
    }
    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.layers
            .first()
            .and_then(|l| l.kv.as_ref())
            .map_or(0, |(k, _)| k.size()[2])
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Causal + padding mask, additive, `[b, 1, s, past+s]`. `attention_mask` is `[b, past+s]` of 0/1.
pub fn build_mask(attention_mask: &Tensor, seq: i64, kind: Kind) -> Tensor {
    let total = attention_mask.size()[1];
    let past = total - seq;
    let device = attention_mask.device();
    let q_pos = Tensor::arange(seq, (Kind::Int64, device)).unsqueeze(1) + past;
    let k_pos = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
    let causal = k_pos.le_tensor(&q_pos).unsqueeze(0).unsqueeze(0);
    let keep = causal.logical_and(&attention_mask.gt(0).unsqueeze(1).unsqueeze(1));
    Tensor::zeros([1], (kind, device))
        .where_self(&keep, &Tensor::full([1], mask_min(kind), (kind, device)))
}

/// A Llama-family causal language model.
pub struct Llama {
    pub config: ModelConfig,
    pub vs: nn::VarStore,
    pub embed_tokens: Tensor,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// `None` when the embeddings are tied.
    pub lm_head: Option<Tensor>,
    rotary: Rotary,
}

impl Llama {
    /// Creates the model with zero-initialized variables named as Hugging Face names them.
    pub fn new(vs: nn::VarStore, config: &ModelConfig) -> Self {
        let root = vs.root();
        let m = &root / "model";
        let embed_tokens = (&m / "embed_tokens").var(
            "weight",
            &[config.vocab_size as i64, config.hidden_size as i64],
            Init::Const(0.0),
        );
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(&(&m / "layers" / i), config))
            .collect();
        let norm = RmsNorm::new(&(&m / "norm"), config.hidden_size, config.rms_norm_eps);
        let lm_head = (!config.tie_word_embeddings).then(|| {
            (&root / "lm_head").var(
                "weight",
                &[config.vocab_size as i64, config.hidden_size as i64],
                Init::Const(0.0),
            )
        });
        let rotary = Rotary::new(config, vs.device());
        Self {
            config: config.clone(),
            vs,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary,
        }
    }

    /// Loads a model directory (`config.json` + safetensors) onto `device` in `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self, LoadError> {
        let config = ModelConfig::load(dir)?;
        let weights = Weights::load_dir(dir)?;
        let vs = nn::VarStore::new(device);
        let model = Self::new(vs, &config);
        model.fill(dir, &weights)?;
        let mut model = model;
        model.vs.set_kind(kind);
        model.vs.freeze();
        Ok(model)
    }

    fn fill(&self, dir: &Path, weights: &Weights) -> Result<(), LoadError> {
        // Sorted, so the error names the same tensor every time.
        let vars: std::collections::BTreeMap<String, Tensor> =
            self.vs.variables().into_iter().collect();
        let missing: Vec<&String> = vars
            .keys()
            .filter(|n| !weights.tensors.contains_key(*n))
            .collect();
        if let Some(first) = missing.first() {
            return Err(LoadError::Missing {
                dir: dir.to_owned(),
                tensor: (*first).clone(),
                others: missing.len() - 1,
            });
        }
        let _guard = tch::no_grad_guard();
        for (name, var) in &vars {
            let Some((file, src)) = weights.tensors.get(name) else {
                continue;
            };
            if src.size() != var.size() {
                return Err(LoadError::Shape {
                    file: file.clone(),
                    tensor: name.clone(),
                    expected: var.size(),
                    found: src.size(),
                });
            }
            let mut var = var.shallow_clone();
            var.f_copy_(src).map_err(|source| LoadError::Torch {
                what: format!("copy {name}"),
                source,
            })?;
        }
        Ok(())
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }
    pub fn kind(&self) -> Kind {
        self.embed_tokens.kind()
    }

    /// Logits `[b, s, vocab]` in f32.
    ///
    /// `input_ids`, `position_ids`: `[b, s]` int64; `attention_mask`: `[b, past+s]` 0/1 int64 where
    /// `past` is the cache length. With a cache, the new keys/values are appended to it.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        let hidden = self.hidden_states(input_ids, position_ids, attention_mask, cache);
        self.logits(&hidden)
    }

    /// Final-normed hidden states `[b, s, hidden]` (the trainer computes log-probs from these).
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        position_ids: &Tensor,
        attention_mask: &Tensor,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor {
        let kind = self.kind();
        let seq = input_ids.size()[1];
        let mut x = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false);
        let (cos, sin) = self.rotary.tables(position_ids, kind);
        let mask = build_mask(attention_mask, seq, kind);
        let mask = Some(&mask);
        for (i, layer) in self.layers.iter().enumerate() {
            let lc = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(&x, &cos, &sin, mask, lc);
        }
        self.norm.forward(&x)
    }

    /// Final-normed hidden states `[b, s, hidden]` of a right-padded batch without a cache. Every
    /// padding position follows every real token of its row, so the causal mask alone is exact at
    /// real positions (padding rows are garbage, never read); no `[b, 1, s, s]` mask is built and
    /// SDPA may use its memory-efficient kernel, as transformers does for training.
    pub fn hidden_states_right_padded(&self, input_ids: &Tensor, position_ids: &Tensor) -> Tensor {
        let kind = self.kind();
        let mut x = Tensor::embedding(&self.embed_tokens, input_ids, -1, false, false);
        let (cos, sin) = self.rotary.tables(position_ids, kind);
        for layer in &self.layers {
            x = layer.forward(&x, &cos, &sin, None, None);
        }
        self.norm.forward(&x)
    }

    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        hidden.linear::<Tensor>(w, None).to_kind(Kind::Float)
    }
}
