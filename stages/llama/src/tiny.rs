//! A tiny Llama for fast tests, created deterministically from a seed: same code path and file
//! layout as a real model (config, safetensors, byte-level BPE tokenizer, ChatML template).

use crate::import::ImportError;
use crate::weights::{self, RawTensor};
use flywheel_core::SplitMix64;
use flywheel_model::config::ModelConfig;
use flywheel_model::tokenizer::{self, SpecialTokens};
use std::path::Path;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// ChatML, as SmolLM2 and Qwen use it.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// GPT-2's reversible byte → printable character map used by byte-level BPE vocabularies.
pub fn bytes_to_unicode() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or('?')
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap_or('?')
            }
        })
        .collect()
}

/// The tiny model's tokenizer: the 256 byte tokens, a few merges, ChatML special tokens.
pub fn tiny_tokenizer() -> Result<(Tokenizer, SpecialTokens), tokenizer::TokenizerError> {
    let chars = bytes_to_unicode();
    let mut vocab: Vocab = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .collect();
    // A handful of merges so the BPE path (not only byte fallback) is exercised.
    let merges: Vec<(String, String)> =
        [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    for (a, b) in &merges {
        let next = vocab.len() as u32;
        vocab.insert(format!("{a}{b}"), next);
    }
    let base = vocab.len() as u32;
    let err = |e: tokenizers::Error| tokenizer::TokenizerError::Tokenizers {
        path: "<tiny>".into(),
        message: e.to_string(),
    };
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(err)?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
    tok.with_decoder(Some(ByteLevel::new(false, false, true)));
    tok.add_special_tokens(&SPECIALS.map(|s| AddedToken::from(s, true).normalized(false)));
    let special: Vec<(String, u32)> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), base + i as u32))
        .collect();
    let specials = SpecialTokens {
        bos: Some(special[1].clone()),
        eos: Some(special[2].clone()),
        pad: Some(special[0].clone()),
        unk: None,
        add_bos: false,
        chat_template: Some(CHATML_TEMPLATE.to_owned()),
        special,
    };
    Ok((tok, specials))
}

/// Writes a tiny random model directory (deterministic in `seed`) to `out`.
pub fn create(out: &Path, seed: u64) -> Result<ModelConfig, ImportError> {
    let (tok, specials) = tiny_tokenizer()?;
    let mut cfg = ModelConfig::tiny(tok.get_vocab_size(true));
    cfg.bos_token_id = specials.bos.as_ref().map(|b| b.1 as i64);
    cfg.eos_token_id = specials.eos.as_ref().map(|e| serde_json::json!(e.1));
    cfg.pad_token_id = specials.pad.as_ref().map(|p| p.1 as i64);
    let mut rng = SplitMix64::new(seed);
    let mut tensors = Vec::new();
    let mut normal = |name: String, shape: Vec<usize>, mean: f64, std: f64| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (mean + rng.normal() * std) as f32).collect();
        RawTensor::f32(name, shape, &v)
    };
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim(),
        cfg.kv_heads() * cfg.head_dim(),
    );
    // Larger than the usual 0.02 so that logits are far from uniform and greedy choices are stable.
    tensors.push(normal(
        "model.embed_tokens.weight".into(),
        vec![v, h],
        0.0,
        0.5,
    ));
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (n, rows, cols) in [
            ("q_proj", q, h),
            ("k_proj", kv, h),
            ("v_proj", kv, h),
            ("o_proj", h, q),
        ] {
            tensors.push(normal(
                format!("{p}.self_attn.{n}.weight"),
                vec![rows, cols],
                0.0,
                0.15,
            ));
        }
        for (n, rows, cols) in [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)] {
            tensors.push(normal(
                format!("{p}.mlp.{n}.weight"),
                vec![rows, cols],
                0.0,
                0.15,
            ));
        }
        for n in ["input_layernorm", "post_attention_layernorm"] {
            tensors.push(normal(format!("{p}.{n}.weight"), vec![h], 1.0, 0.1));
        }
    }
    tensors.push(RawTensor::f32("model.norm.weight", vec![h], &vec![1.0; h]));
    flywheel_model::atomic::write_dir(out, true, |dir| -> Result<(), ImportError> {
        let json =
            |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).map_err(|source| ImportError::Io {
                path: dir.join(name),
                source,
            })
        };
        write(
            "config.json",
            json(&serde_json::to_value(&cfg).unwrap_or_default()),
        )?;
        weights::save(&dir.join("model.safetensors"), &tensors)?;
        tokenizer::save(&tok, &dir.join("tokenizer.json"))?;
        write(
            "tokenizer_config.json",
            json(&tokenizer::tokenizer_config(
                &specials,
                cfg.max_position_embeddings,
            )),
        )?;
        write(
            "generation_config.json",
            json(
                &serde_json::json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id}),
            ),
        )?;
        Ok(())
    })?;
    Ok(cfg)
}
