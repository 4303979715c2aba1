//! A small ONNX graph builder: nodes with generated names, constants, and initializers written
//! as external data (one `model.onnx.data` file beside `model.onnx`).

use crate::proto::attribute_proto::AttributeType;
use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::tensor_shape_proto::{dimension, Dimension};
use crate::proto::type_proto;
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use std::io::Write;
use std::path::Path;

/// Tensors at least this large go to the external data file; smaller ones stay inline.
const EXTERNAL_MIN_BYTES: usize = 1024;
/// External data offsets are page-aligned so ONNX Runtime can memory-map them.
const ALIGN: u64 = 4096;

pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;
/// ONNX Runtime's domain of fused operators.
pub const CONTRIB_DOMAIN: &str = "com.microsoft";

/// ONNX element types used by the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    Bf16,
    I64,
    I32,
    Bool,
}

impl Elem {
    pub fn onnx(self) -> i32 {
        (match self {
            Self::F32 => DataType::Float,
            Self::F16 => DataType::Float16,
            Self::Bf16 => DataType::Bfloat16,
            Self::I64 => DataType::Int64,
            Self::I32 => DataType::Int32,
            Self::Bool => DataType::Bool,
        }) as i32
    }
}

/// A dimension of a graph input or output.
pub enum Dim {
    Fixed(i64),
    Named(&'static str),
}

pub fn value_info(name: &str, elem: Elem, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v),
                Dim::Named(p) => dimension::Value::DimParam((*p).to_owned()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_owned()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem.onnx()),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Float as i32),
        f: Some(v),
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

/// Builds a graph; initializer bytes stream to the external data file as they are added.
pub struct Graph {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub inputs: Vec<ValueInfoProto>,
    pub outputs: Vec<ValueInfoProto>,
    scope: String,
    counter: usize,
    /// Whether a node of ONNX Runtime's `com.microsoft` domain was added.
    uses_contrib: bool,
    data: std::io::BufWriter<std::fs::File>,
    data_name: String,
    offset: u64,
}

impl Graph {
    /// `data_path`: the external data file to create (its file name is recorded in the model).
    pub fn new(data_path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::create(data_path)?;
        let data_name = data_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            scope: String::new(),
            counter: 0,
            uses_contrib: false,
            data: std::io::BufWriter::with_capacity(1 << 22, file),
            data_name,
            offset: 0,
        })
    }

    /// Prefix for generated node and value names (e.g. `model.layers.3.self_attn`).
    pub fn set_scope(&mut self, scope: impl Into<String>) {
        self.scope = scope.into();
    }

    pub fn fresh_name(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("/{}/{what}_{}", self.scope, self.counter)
    }

    /// Adds a node with one output named `out`.
    pub fn op_to(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        out: &str,
    ) -> String {
        self.push_node(op, None, inputs, attrs, vec![out.to_owned()]);
        out.to_owned()
    }

    /// Adds a node of ONNX Runtime's contrib domain (`com.microsoft`) with `outputs` generated
    /// output names (an empty string in `inputs` skips an optional input), returning them.
    pub fn contrib(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        let outs = self.output_names(op, outputs);
        self.contrib_to(op, inputs, attrs, &outs);
        outs
    }

    /// [`Graph::contrib`] with given output names (an empty name skips an optional output).
    pub fn contrib_to(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: &[String],
    ) {
        self.uses_contrib = true;
        self.push_node(op, Some(CONTRIB_DOMAIN), inputs, attrs, outputs.to_vec());
    }

    /// Adds a standard-domain node with `outputs` generated output names, returning them.
    pub fn op_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: usize,
    ) -> Vec<String> {
        let outs = self.output_names(op, outputs);
        self.push_node(op, None, inputs, attrs, outs.clone());
        outs
    }

    fn output_names(&mut self, op: &str, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| self.fresh_name(&format!("{op}_output{i}")))
            .collect()
    }

    fn push_node(
        &mut self,
        op: &str,
        domain: Option<&str>,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        outputs: Vec<String>,
    ) {
        let name = self.fresh_name(op);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: outputs,
            name: Some(name),
            op_type: Some(op.to_owned()),
            domain: domain.map(str::to_owned),
            attribute: attrs,
            ..Default::default()
        });
    }

    /// Adds a node with one generated output name.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.fresh_name(&format!("{op}_output"));
        self.op_to(op, inputs, attrs, &out)
    }

    /// Adds an initializer from raw little-endian bytes.
    pub fn initializer(
        &mut self,
        name: &str,
        elem: Elem,
        dims: &[i64],
        bytes: &[u8],
    ) -> std::io::Result<String> {
        let mut t = TensorProto {
            name: Some(name.to_owned()),
            dims: dims.to_vec(),
            data_type: Some(elem.onnx()),
            ..Default::default()
        };
        if bytes.len() >= EXTERNAL_MIN_BYTES {
            let pad = (ALIGN - self.offset % ALIGN) % ALIGN;
            self.data.write_all(&vec![0u8; pad as usize])?;
            self.offset += pad;
            self.data.write_all(bytes)?;
            let entry = |k: &str, v: String| StringStringEntryProto {
                key: Some(k.into()),
                value: Some(v),
            };
            t.data_location = Some(DataLocation::External as i32);
            t.external_data = vec![
                entry("location", self.data_name.clone()),
                entry("offset", self.offset.to_string()),
                entry("length", bytes.len().to_string()),
            ];
            self.offset += bytes.len() as u64;
        } else {
            t.raw_data = Some(bytes.to_vec());
        }
        self.initializers.push(t);
        Ok(name.to_owned())
    }

    pub fn const_i64(&mut self, values: &[i64], dims: &[i64]) -> String {
        let name = self.fresh_name("const_i64");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inline(&name, Elem::I64, dims, bytes)
    }

    pub fn const_f32(&mut self, values: &[f32], dims: &[i64]) -> String {
        let name = self.fresh_name("const_f32");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.inline(&name, Elem::F32, dims, bytes)
    }

    /// A scalar of a floating type (`value` rounded to that type).
    pub fn const_scalar(&mut self, elem: Elem, value: f32) -> String {
        let name = self.fresh_name("const_scalar");
        let bytes = match elem {
            Elem::F16 => half::f16::from_f32(value).to_le_bytes().to_vec(),
            Elem::Bf16 => half::bf16::from_f32(value).to_le_bytes().to_vec(),
            _ => value.to_le_bytes().to_vec(),
        };
        self.inline(&name, elem, &[], bytes)
    }

    fn inline(&mut self, name: &str, elem: Elem, dims: &[i64], bytes: Vec<u8>) -> String {
        self.initializers.push(TensorProto {
            name: Some(name.to_owned()),
            dims: dims.to_vec(),
            data_type: Some(elem.onnx()),
            raw_data: Some(bytes),
            ..Default::default()
        });
        name.to_owned()
    }

    /// Finishes the external data file and returns the model.
    pub fn finish(mut self, graph_name: &str, doc: &str) -> std::io::Result<ModelProto> {
        self.data.flush()?;
        self.data.get_ref().sync_all()?;
        Ok(ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import: std::iter::once(OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            })
            .chain(self.uses_contrib.then(|| OperatorSetIdProto {
                domain: Some(CONTRIB_DOMAIN.to_owned()),
                version: Some(1),
            }))
            .collect(),
            producer_name: Some("flywheel".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            doc_string: Some(doc.into()),
            graph: Some(GraphProto {
                node: self.nodes,
                name: Some(graph_name.into()),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}
