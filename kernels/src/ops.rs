//! Device-neutral descriptions of the operations every kernel set implements (the CPU's in
//! [`crate::cpu`]; a device's beside them): the engine's blocks and backends speak these.

/// An element-wise activation function, named as in PyTorch / RecBole `hidden_act`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Exact erf-form GELU (PyTorch's default `nn.GELU()`), not the tanh approximation.
    Gelu,
    /// `max(x, 0)`.
    Relu,
    /// `x·σ(x)` (RecBole's `swish`, PyTorch's `SiLU`).
    Silu,
    /// `σ(x)`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// `x`.
    Identity,
    /// GELU's tanh approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (DiT's MLPs).
    GeluTanh,
}

impl Activation {
    /// Parses RecBole / PyTorch names: `gelu`, `relu`, `swish`/`silu`, `sigmoid`, `tanh`,
    /// `identity`/`linear`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            "swish" | "silu" => Activation::Silu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "identity" | "linear" | "none" => Activation::Identity,
            "gelu_tanh" => Activation::GeluTanh,
            _ => return None,
        })
    }

    /// Lower-case name (`"gelu"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::Relu => "relu",
            Activation::Silu => "swish",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Identity => "identity",
            Activation::GeluTanh => "gelu_tanh",
        }
    }
}
