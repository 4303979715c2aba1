//! The decoder's I/O names (the Optimum / onnxruntime-genai convention) and the metadata keys our
//! exporter writes: one definition for the graph writer, the engine and the parity check.

/// Token ids `[batch, seq]`, int64.
pub const INPUT_IDS: &str = "input_ids";
/// 1 for real tokens, 0 for padding, `[batch, past + seq]`, int64.
pub const ATTENTION_MASK: &str = "attention_mask";
/// Positions `[batch, seq]`, int64 (optional in some graphs).
pub const POSITION_IDS: &str = "position_ids";
/// Logits `[batch, seq or logits_to_keep, vocab]`, f32.
pub const LOGITS: &str = "logits";
/// Optional input: how many final positions get logits (0, the default: all).
pub const LOGITS_TO_KEEP: &str = "logits_to_keep";
/// Model metadata key set to `true` on fused graphs: `past_key_values.*` and `present.*` may be
/// bound to one buffer with spare columns (GroupQueryAttention's shared-buffer mode), so a decode
/// step writes its key/value in place instead of copying the whole cache into a new present.
pub const SHARE_BUFFER_KEY: &str = "flywheel.past_present_share_buffer";

/// `past_key_values.{layer}.key`.
pub fn past_key(layer: usize) -> String {
    format!("past_key_values.{layer}.key")
}

/// `past_key_values.{layer}.value`.
pub fn past_value(layer: usize) -> String {
    format!("past_key_values.{layer}.value")
}

/// `present.{layer}.key`.
pub fn present_key(layer: usize) -> String {
    format!("present.{layer}.key")
}

/// `present.{layer}.value`.
pub fn present_value(layer: usize) -> String {
    format!("present.{layer}.value")
}

/// Every layer's past names in graph order: key then value, layer by layer.
pub fn past_names(layers: usize) -> Vec<String> {
    (0..layers)
        .flat_map(|i| [past_key(i), past_value(i)])
        .collect()
}

/// Every layer's present names in graph order: key then value, layer by layer.
pub fn present_names(layers: usize) -> Vec<String> {
    (0..layers)
        .flat_map(|i| [present_key(i), present_value(i)])
        .collect()
}
