//! Tokenizer files of a model directory: building `tokenizer.json` / `tokenizer_config.json`
//! from a GGUF's byte-level BPE vocabulary, and loading them back for encoding.

use crate::gguf::{Gguf, GgufError};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::Sequence as NormalizerSequence;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{AddedToken, Tokenizer};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: unsupported tokenizer model {model:?} (supported: gpt2 byte-level BPE)")]
    Model { path: PathBuf, model: String },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{path}: tokenizer error: {message}")]
    Tokenizers { path: PathBuf, message: String },
    #[error("{path}: cannot read or write: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `tokenizer_config.json` and `generation_config.json` need besides the vocabulary.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub bos: Option<(String, u32)>,
    pub eos: Option<(String, u32)>,
    pub pad: Option<(String, u32)>,
    pub unk: Option<(String, u32)>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
    /// Control tokens (GGUF token type 3), registered as special added tokens.
    pub special: Vec<(String, u32)>,
}

/// Split regexes for `tokenizer.ggml.pre` values, as transformers (5.x,
/// `integrations/gguf/gguf_tokenizer_mapping.py`) maps them: the text is split where the
/// vocabulary's merges were learned, before the byte-level mapping. Other values (`smollm`,
/// `gpt2`, none) keep GPT-2's byte-level split, as transformers does.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn pre_split(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// Builds the tokenizer the way transformers converts a GGUF byte-level BPE vocabulary: BPE with
/// byte fallback, byte-level pre-tokenizer without prefix space (after the split regex that
/// `tokenizer.ggml.pre` names, where transformers knows one), empty normalizer, control tokens
/// as special added tokens.
pub fn from_gguf(g: &Gguf) -> Result<(Tokenizer, SpecialTokens), TokenizerError> {
    let path = g.path.clone();
    let model = g.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(TokenizerError::Model {
            path,
            model: model.to_owned(),
        });
    }
    let tokens = g.strings("tokenizer.ggml.tokens")?;
    let merges_raw = g.strings("tokenizer.ggml.merges")?;
    let types: Vec<i64> = match g
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
    {
        Some(a) => a
            .iter()
            .map(|v| v.as_u64().map_or(1, |x| x as i64))
            .collect(),
        None => vec![1; tokens.len()],
    };
    let invalid = |what: String| TokenizerError::Invalid {
        path: path.clone(),
        what,
    };
    if types.len() != tokens.len() {
        return Err(invalid(format!(
            "{} token types for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if vocab.insert((*t).to_owned(), i as u32).is_some() {
            return Err(invalid(format!(
                "token {t:?} appears twice in the vocabulary"
            )));
        }
    }
    let mut merges = Vec::with_capacity(merges_raw.len());
    for (i, m) in merges_raw.iter().enumerate() {
        let (a, b) = m
            .split_once(' ')
            .ok_or_else(|| invalid(format!("merge {i} {m:?} is not two tokens")))?;
        merges.push((a.to_owned(), b.to_owned()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true)
        .build()
        .map_err(|e| TokenizerError::Tokenizers {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_normalizer(Some(NormalizerSequence::new(vec![])));
    match g
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.as_str())
        .and_then(pre_split)
    {
        Some(split) => {
            let split = Split::new(
                SplitPattern::Regex(split.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| TokenizerError::Tokenizers {
                path: path.clone(),
                message: e.to_string(),
            })?;
            tok.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])));
        }
        None => {
            tok.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
        }
    }
    tok.with_decoder(Some(ByteLevel::new(false, false, true)));

    let id_of = |key: &str| -> Option<(String, u32)> {
        let id = g.get(key)?.as_u64()? as usize;
        tokens.get(id).map(|t| ((*t).to_owned(), id as u32))
    };
    let special: Vec<(String, u32)> = types
        .iter()
        .enumerate()
        .filter(|(_, &ty)| ty == TOKEN_CONTROL)
        .map(|(i, _)| (tokens[i].to_owned(), i as u32))
        .collect();
    let added: Vec<AddedToken> = special
        .iter()
        .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
        .collect();
    tok.add_special_tokens(&added);
    let user: Vec<AddedToken> = types
        .iter()
        .enumerate()
        .filter(|(_, &ty)| ty == TOKEN_USER_DEFINED)
        .map(|(i, _)| AddedToken::from(tokens[i].to_owned(), false).normalized(false))
        .collect();
    tok.add_tokens(&user);

    let specials = SpecialTokens {
        bos: id_of("tokenizer.ggml.bos_token_id"),
        eos: id_of("tokenizer.ggml.eos_token_id"),
        pad: id_of("tokenizer.ggml.padding_token_id"),
        unk: id_of("tokenizer.ggml.unknown_token_id"),
        add_bos: g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        chat_template: g
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        special,
    };
    if specials.add_bos {
        if let Some((bos, id)) = &specials.bos {
            let post = TemplateProcessing::builder()
                .try_single(format!("{bos} $A"))
                .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B")))
                .map_err(|e| invalid(format!("bos template: {e}")))?
                .special_tokens(vec![(bos.clone(), *id)])
                .build()
                .map_err(|e| invalid(format!("bos template: {e}")))?;
            tok.with_post_processor(Some(post));
        }
    }
    Ok((tok, specials))
}

/// `tokenizer_config.json` in the transformers format, carrying the chat template.
pub fn tokenizer_config(s: &SpecialTokens, max_len: u64) -> Value {
    let name = |t: &Option<(String, u32)>| {
        t.as_ref()
            .map(|(n, _)| Value::String(n.clone()))
            .unwrap_or(Value::Null)
    };
    let decoder: serde_json::Map<String, Value> = s
        .special
        .iter()
        .map(|(t, id)| {
            (id.to_string(), json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true}))
        })
        .collect();
    let mut v = json!({
        "add_bos_token": s.add_bos,
        "add_eos_token": false,
        "added_tokens_decoder": decoder,
        "bos_token": name(&s.bos),
        "eos_token": name(&s.eos),
        "pad_token": name(&s.pad),
        "unk_token": name(&s.unk),
        "clean_up_tokenization_spaces": false,
        "model_max_length": max_len,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    if let Some(t) = &s.chat_template {
        v["chat_template"] = Value::String(t.clone());
    }
    v
}

/// Writes a tokenizer as `tokenizer.json`.
pub fn save(tok: &Tokenizer, path: &Path) -> Result<(), TokenizerError> {
    tok.save(path, true)
        .map_err(|e| TokenizerError::Tokenizers {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Loads `tokenizer.json` from a model directory.
pub fn load(dir: &Path) -> Result<Tokenizer, TokenizerError> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(TokenizerError::Invalid {
            path,
            what: "missing (only tokenizer.json tokenizers are supported)".into(),
        });
    }
    Tokenizer::from_file(&path).map_err(|e| TokenizerError::Tokenizers {
        path,
        message: e.to_string(),
    })
}

/// Encodes text to ids (`add_special` applies the tokenizer's post-processor, e.g. a BOS).
pub fn encode(tok: &Tokenizer, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
    tok.encode(text, add_special)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| TokenizerError::Tokenizers {
            path: PathBuf::from("<tokenizer>"),
            message: e.to_string(),
        })
}

pub fn decode(tok: &Tokenizer, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
    tok.decode(ids, skip_special)
        .map_err(|e| TokenizerError::Tokenizers {
            path: PathBuf::from("<tokenizer>"),
            message: e.to_string(),
        })
}
