//! The subset of Python's pickle protocol (versions 2 to 5) that `torch.save` writes, run as a
//! data-only interpreter: nothing is imported or executed. A `GLOBAL` only names a class or a
//! function; calling one (`REDUCE`, `NEWOBJ`) is allowed only for the callables listed in
//! `Call` (tensor and storage rebuilding, `OrderedDict`, sets, `torch.device`, RecBole's
//! `Config` and enums, NumPy scalars), each of which builds a plain value here. Any other
//! opcode or callable is an error naming it and its offset.
//!
//! Objects live in an arena and the stack and memo hold indices, so `BINGET` is O(1) and a
//! pickle that references one object many times cannot make the reader copy it many times.

use crate::codec::Reader;
use crate::error::{Error, Result};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// A value on the stack: a scalar, or an object of the arena.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Val {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// A float.
    Float(f64),
    /// Object `n` of the arena.
    Obj(usize),
    /// The `MARK` sentinel.
    Mark,
}

/// Element type of a PyTorch storage.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StorageType {
    /// `torch.FloatStorage`.
    F32,
    /// `torch.HalfStorage`.
    F16,
    /// `torch.BFloat16Storage`.
    BF16,
    /// Any other storage (`Double`, `Long`, `Int`, `Bool`, ...): readable in the pickle, not
    /// convertible to a model weight.
    Other(&'static str),
}

impl StorageType {
    fn from_class(name: &str) -> Option<StorageType> {
        Some(match name {
            "FloatStorage" => StorageType::F32,
            "HalfStorage" => StorageType::F16,
            "BFloat16Storage" => StorageType::BF16,
            "DoubleStorage" => StorageType::Other("float64"),
            "LongStorage" => StorageType::Other("int64"),
            "IntStorage" => StorageType::Other("int32"),
            "ShortStorage" => StorageType::Other("int16"),
            "CharStorage" => StorageType::Other("int8"),
            "ByteStorage" => StorageType::Other("uint8"),
            "BoolStorage" => StorageType::Other("bool"),
            "ComplexFloatStorage" => StorageType::Other("complex64"),
            "ComplexDoubleStorage" => StorageType::Other("complex128"),
            _ => return None,
        })
    }

    /// Bytes per element (0 for the unconvertible ones, whose size is not needed).
    pub fn size(self) -> usize {
        match self {
            StorageType::F32 => 4,
            StorageType::F16 | StorageType::BF16 => 2,
            StorageType::Other(_) => 0,
        }
    }

    /// The dtype's name.
    pub fn name(self) -> &'static str {
        match self {
            StorageType::F32 => "float32",
            StorageType::F16 => "float16",
            StorageType::BF16 => "bfloat16",
            StorageType::Other(n) => n,
        }
    }
}

/// A tensor as the pickle describes it: a view into a storage record.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    /// The storage's record name (`data/<key>`).
    pub key: String,
    /// Element type.
    pub dtype: StorageType,
    /// Elements in the storage.
    pub storage_numel: usize,
    /// First element of the view.
    pub offset: usize,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub stride: Vec<usize>,
}

/// An object of the arena.
#[derive(Clone, Debug, PartialEq)]
pub enum Obj {
    /// A `str`.
    Str(String),
    /// A `bytes`.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Val>),
    /// A tuple.
    Tuple(Vec<Val>),
    /// A dict or `OrderedDict`, in insertion order.
    Dict(Vec<(Val, Val)>),
    /// A set or frozenset.
    Set(Vec<Val>),
    /// A reference to a class or function (`module`, `name`); never imported.
    Global(String, String),
    /// A storage (persistent id).
    Storage {
        /// Record key.
        key: String,
        /// Element type.
        dtype: StorageType,
        /// Elements.
        numel: usize,
    },
    /// A tensor.
    Tensor(TensorRef),
    /// An instance of an allowed class, kept as data: its class, constructor arguments and
    /// the state `BUILD` gave it (RecBole's `Config`, enums, `torch.device`, NumPy scalars).
    Instance {
        /// `module.name` of the class.
        class: String,
        /// Constructor arguments (a tuple).
        args: Val,
        /// State set by `BUILD`.
        state: Option<Val>,
    },
}

/// The callables a pickle may call, by what they build.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Call {
    RebuildTensor,
    RebuildParameter,
    OrderedDict,
    Set,
    Encode,
    /// A class kept as an [`Obj::Instance`].
    Instance,
}

fn allowed(module: &str, name: &str) -> Option<Call> {
    Some(match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => Call::RebuildTensor,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            Call::RebuildParameter
        }
        ("collections", "OrderedDict") => Call::OrderedDict,
        ("builtins" | "__builtin__", "set" | "frozenset") => Call::Set,
        ("_codecs", "encode") => Call::Encode,
        ("torch", "device")
        | ("recbole.config.configurator", "Config")
        | ("numpy", "dtype")
        | ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Call::Instance,
        ("recbole.utils.enum_type", _) => Call::Instance,
        _ => return None,
    })
}

const ALLOWED: &str = "torch._utils._rebuild_tensor_v2 / _rebuild_parameter, \
    collections.OrderedDict, builtins.set / frozenset, _codecs.encode, torch.device, \
    recbole.config.configurator.Config, recbole.utils.enum_type.*, numpy.dtype, \
    numpy.core.multiarray.scalar";

fn pickle_err(msg: String) -> Error {
    Error::Checkpoint(format!("data.pkl: {msg}"))
}

/// Largest number of arena objects (a pickle cannot need more objects than it has bytes).
const MAX_OBJECTS: usize = 1 << 26;

/// A parsed pickle: the arena and the root value.
#[derive(Debug)]
pub struct Pickle {
    /// Every object made.
    pub objs: Vec<Obj>,
    /// What `STOP` returned.
    pub root: Val,
}

impl Pickle {
    /// The object behind `v`, if it is one.
    pub fn obj(&self, v: Val) -> Option<&Obj> {
        match v {
            Val::Obj(i) => self.objs.get(i),
            _ => None,
        }
    }

    /// The string `v`, if it is one.
    pub fn str(&self, v: Val) -> Option<&str> {
        match self.obj(v) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// The entries of the dict `v` (a plain dict or an `OrderedDict`).
    pub fn dict(&self, v: Val) -> Option<&[(Val, Val)]> {
        match self.obj(v) {
            Some(Obj::Dict(d)) => Some(d),
            _ => None,
        }
    }

    /// The value of the string key `key` in the dict `v`.
    pub fn get(&self, v: Val, key: &str) -> Option<Val> {
        self.dict(v)?
            .iter()
            .find(|(k, _)| self.str(*k) == Some(key))
            .map(|&(_, v)| v)
    }
}

struct Vm<'a> {
    r: Reader<'a>,
    objs: Vec<Obj>,
    stack: Vec<Val>,
    marks: Vec<usize>,
    memo: Vec<Option<Val>>,
}

/// Runs the pickle in `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Pickle> {
    let mut vm = Vm {
        r: Reader::new(bytes, pickle_err),
        objs: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Vec::new(),
    };
    let root = vm.run()?;
    Ok(Pickle {
        objs: vm.objs,
        root,
    })
}

/// Names of the opcodes outside the subset, for error messages.
fn opcode_name(op: u8) -> &'static str {
    match op {
        b'i' => "INST",
        b'o' => "OBJ",
        b'P' => "PERSID (text)",
        b'S' => "STRING (text)",
        b'V' => "UNICODE (text)",
        b'F' => "FLOAT (text)",
        b'L' => "LONG (text)",
        b'I' => "INT (text)",
        b'g' => "GET (text)",
        b'p' => "PUT (text)",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        0x92 => "NEWOBJ_EX",
        _ => "unknown",
    }
}

impl Vm<'_> {
    fn err(&self, msg: impl core::fmt::Display) -> Error {
        self.r.error(msg)
    }

    fn alloc(&mut self, o: Obj) -> Result<Val> {
        if self.objs.len() >= MAX_OBJECTS {
            return Err(self.err("more than 2^26 objects"));
        }
        self.objs.push(o);
        Ok(Val::Obj(self.objs.len() - 1))
    }

    fn pop(&mut self, what: &str) -> Result<Val> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err(format_args!("{what}: the stack is empty")));
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&mut self, what: &str) -> Result<Val> {
        let v = self.pop(what)?;
        self.stack.push(v);
        Ok(v)
    }

    /// The values above the last mark, removing them and the mark.
    fn pop_mark(&mut self, what: &str) -> Result<Vec<Val>> {
        let Some(m) = self.marks.pop() else {
            return Err(self.err(format_args!("{what} without a MARK")));
        };
        Ok(self.stack.split_off(m))
    }

    fn string(&mut self, n: usize, what: &str) -> Result<Val> {
        let b = self.r.take(n, what)?;
        let s = core::str::from_utf8(b)
            .map_err(|_| self.err(format_args!("{what} is not valid UTF-8")))?;
        self.alloc(Obj::Str(s.to_string()))
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<Val> {
        let b = self.r.take(n, what)?.to_vec();
        self.alloc(Obj::Bytes(b))
    }

    fn len32(&mut self, what: &str) -> Result<usize> {
        Ok(self.r.u32(what)? as usize)
    }

    fn len64(&mut self, what: &str) -> Result<usize> {
        let n = self.r.u64(what)?;
        usize::try_from(n).map_err(|_| self.err(format_args!("{what}: length {n} too large")))
    }

    fn line(&mut self, what: &str) -> Result<String> {
        let start = self.r.pos();
        let mut n = 0;
        loop {
            if self.r.u8(what)? == b'\n' {
                break;
            }
            n += 1;
            if n > 256 {
                return Err(self.err(format_args!("{what}: no newline within 256 bytes")));
            }
        }
        self.r.seek(start)?;
        let s = self.r.take(n, what)?;
        let s = core::str::from_utf8(s)
            .map_err(|_| self.err(format_args!("{what} is not valid UTF-8")))?
            .to_string();
        self.r.u8(what)?;
        Ok(s)
    }

    fn memo_put(&mut self, idx: usize) -> Result<()> {
        let v = self.top("PUT")?;
        if idx > self.objs.len() + self.memo.len() + 16 {
            return Err(self.err(format_args!(
                "memo index {idx} is out of any plausible range"
            )));
        }
        if idx >= self.memo.len() {
            self.memo.resize(idx + 1, None);
        }
        self.memo[idx] = Some(v);
        Ok(())
    }

    fn memo_get(&mut self, idx: usize) -> Result<()> {
        match self.memo.get(idx).copied().flatten() {
            Some(v) => {
                self.stack.push(v);
                Ok(())
            }
            None => Err(self.err(format_args!("GET of memo index {idx}, which was never set"))),
        }
    }

    fn global_of(&self, v: Val) -> Option<(&str, &str)> {
        match v {
            Val::Obj(i) => match &self.objs[i] {
                Obj::Global(m, n) => Some((m, n)),
                _ => None,
            },
            _ => None,
        }
    }

    fn tuple_items(&self, v: Val, what: &str) -> Result<Vec<Val>> {
        match v {
            Val::Obj(i) => match &self.objs[i] {
                Obj::Tuple(t) | Obj::List(t) => Ok(t.clone()),
                _ => Err(self.err(format_args!("{what}: arguments are not a tuple"))),
            },
            _ => Err(self.err(format_args!("{what}: arguments are not a tuple"))),
        }
    }

    fn int(&self, v: Val, what: &str) -> Result<usize> {
        match v {
            Val::Int(i) if i >= 0 => Ok(i as usize),
            _ => Err(self.err(format_args!("{what} is not a non-negative integer"))),
        }
    }

    fn ints(&self, v: Val, what: &str) -> Result<Vec<usize>> {
        self.tuple_items(v, what)?
            .into_iter()
            .map(|x| self.int(x, what))
            .collect()
    }

    /// `func(*args)` for an allowed callable.
    fn call(&mut self, func: Val, args: Val, op: &str) -> Result<Val> {
        let Some((module, name)) = self.global_of(func) else {
            return Err(self.err(format_args!("{op} of something that is not a GLOBAL")));
        };
        let (module, name) = (module.to_string(), name.to_string());
        let Some(call) = allowed(&module, &name) else {
            return Err(self.err(format_args!(
                "{op} calls `{module}.{name}`, which is not allowed (allowed: {ALLOWED})"
            )));
        };
        let a = self.tuple_items(args, &format!("{module}.{name}"))?;
        match call {
            Call::RebuildTensor => {
                if a.len() < 4 {
                    return Err(self.err(format_args!(
                        "{module}.{name} with {} arguments, expected at least 4",
                        a.len()
                    )));
                }
                let (key, dtype, numel) = match self.obj(a[0]) {
                    Some(Obj::Storage { key, dtype, numel }) => (key.clone(), *dtype, *numel),
                    _ => return Err(self.err("a tensor's first argument is not a storage")),
                };
                let offset = self.int(a[1], "storage offset")?;
                let shape = self.ints(a[2], "tensor size")?;
                let stride = self.ints(a[3], "tensor stride")?;
                if shape.len() != stride.len() {
                    return Err(self.err(format_args!(
                        "tensor of {} dimensions with {} strides",
                        shape.len(),
                        stride.len()
                    )));
                }
                self.alloc(Obj::Tensor(TensorRef {
                    key,
                    dtype,
                    storage_numel: numel,
                    offset,
                    shape,
                    stride,
                }))
            }
            Call::RebuildParameter => match a.first() {
                Some(&t) if matches!(self.obj(t), Some(Obj::Tensor(_))) => Ok(t),
                _ => Err(self.err("a parameter without a tensor")),
            },
            Call::OrderedDict => {
                let mut entries = Vec::new();
                if let Some(&items) = a.first() {
                    for pair in self.tuple_items(items, "OrderedDict items")? {
                        let kv = self.tuple_items(pair, "OrderedDict item")?;
                        if kv.len() != 2 {
                            return Err(self.err("an OrderedDict item is not a pair"));
                        }
                        entries.push((kv[0], kv[1]));
                    }
                }
                self.alloc(Obj::Dict(entries))
            }
            Call::Set => {
                let items = match a.first() {
                    Some(&v) => self.tuple_items(v, "set items")?,
                    None => Vec::new(),
                };
                self.alloc(Obj::Set(items))
            }
            Call::Encode => {
                let text = a.first().and_then(|&v| match self.obj(v) {
                    Some(Obj::Str(s)) => Some(s.clone()),
                    _ => None,
                });
                let Some(text) = text else {
                    return Err(self.err("_codecs.encode of something that is not a string"));
                };
                // Protocol 2 writes bytes as their latin-1 decoding.
                let bytes: Option<Vec<u8>> = text
                    .chars()
                    .map(|c| u8::try_from(u32::from(c)).ok())
                    .collect();
                let Some(bytes) = bytes else {
                    return Err(self.err("_codecs.encode of a string beyond latin-1"));
                };
                self.alloc(Obj::Bytes(bytes))
            }
            Call::Instance => self.alloc(Obj::Instance {
                class: format!("{module}.{name}"),
                args,
                state: None,
            }),
        }
    }

    fn obj(&self, v: Val) -> Option<&Obj> {
        match v {
            Val::Obj(i) => self.objs.get(i),
            _ => None,
        }
    }

    fn persistent(&mut self, pid: Val) -> Result<Val> {
        let t = self.tuple_items(pid, "persistent id")?;
        let tag = t.first().and_then(|&v| match self.obj(v) {
            Some(Obj::Str(s)) => Some(s.as_str()),
            _ => None,
        });
        if tag != Some("storage") || t.len() < 5 {
            return Err(
                self.err("a persistent id that is not ('storage', type, key, location, numel)")
            );
        }
        let dtype = match self.global_of(t[1]) {
            Some(("torch", class)) => StorageType::from_class(class).ok_or_else(|| {
                self.err(format_args!("storage type `torch.{class}` is not known"))
            })?,
            Some((m, n)) => {
                return Err(self.err(format_args!("storage type `{m}.{n}` is not known")));
            }
            None => return Err(self.err("a storage type that is not a GLOBAL")),
        };
        let key = match self.obj(t[2]) {
            Some(Obj::Str(s)) => s.clone(),
            _ => return Err(self.err("a storage key that is not a string")),
        };
        let numel = self.int(t[4], "storage size")?;
        self.alloc(Obj::Storage { key, dtype, numel })
    }

    fn run(&mut self) -> Result<Val> {
        loop {
            let at = self.r.pos();
            let op = self.r.u8("opcode")?;
            match op {
                0x80 => {
                    let v = self.r.u8("protocol")?;
                    if !(2..=5).contains(&v) {
                        return Err(self.err(format_args!("pickle protocol {v} (2 to 5 read)")));
                    }
                }
                0x95 => {
                    self.r.u64("frame length")?;
                }
                b'.' => {
                    let v = self.pop("STOP")?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop("POP")?;
                }
                b'1' => {
                    self.pop_mark("POP_MARK")?;
                }
                b'2' => {
                    let v = self.top("DUP")?;
                    self.stack.push(v);
                }
                b'N' => self.stack.push(Val::None),
                0x88 => self.stack.push(Val::Bool(true)),
                0x89 => self.stack.push(Val::Bool(false)),
                b'J' => {
                    let v = self.r.u32("BININT")? as i32;
                    self.stack.push(Val::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.r.u8("BININT1")?;
                    self.stack.push(Val::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.r.u16("BININT2")?;
                    self.stack.push(Val::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.r.u8("LONG1")? as usize
                    } else {
                        self.len32("LONG4")?
                    };
                    if n > 8 {
                        return Err(self.err(format_args!("an integer of {n} bytes (at most 8)")));
                    }
                    let b = self.r.take(n, "LONG")?;
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= i64::from(x) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Val::Int(v));
                }
                b'G' => {
                    let b = self.r.take(8, "BINFLOAT")?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.stack.push(Val::Float(f64::from_be_bytes(a)));
                }
                b'X' => {
                    let n = self.len32("BINUNICODE")?;
                    let v = self.string(n, "BINUNICODE")?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.r.u8("SHORT_BINUNICODE")? as usize;
                    let v = self.string(n, "SHORT_BINUNICODE")?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.len64("BINUNICODE8")?;
                    let v = self.string(n, "BINUNICODE8")?;
                    self.stack.push(v);
                }
                b'T' => {
                    let n = self.len32("BINSTRING")?;
                    let v = self.string(n, "BINSTRING")?;
                    self.stack.push(v);
                }
                b'U' => {
                    let n = self.r.u8("SHORT_BINSTRING")? as usize;
                    let v = self.string(n, "SHORT_BINSTRING")?;
                    self.stack.push(v);
                }
                b'B' => {
                    let n = self.len32("BINBYTES")?;
                    let v = self.bytes(n, "BINBYTES")?;
                    self.stack.push(v);
                }
                b'C' => {
                    let n = self.r.u8("SHORT_BINBYTES")? as usize;
                    let v = self.bytes(n, "SHORT_BINBYTES")?;
                    self.stack.push(v);
                }
                0x8e => {
                    let n = self.len64("BINBYTES8")?;
                    let v = self.bytes(n, "BINBYTES8")?;
                    self.stack.push(v);
                }
                b'}' => {
                    let v = self.alloc(Obj::Dict(Vec::new()))?;
                    self.stack.push(v);
                }
                b']' => {
                    let v = self.alloc(Obj::List(Vec::new()))?;
                    self.stack.push(v);
                }
                b')' => {
                    let v = self.alloc(Obj::Tuple(Vec::new()))?;
                    self.stack.push(v);
                }
                0x8f => {
                    let v = self.alloc(Obj::Set(Vec::new()))?;
                    self.stack.push(v);
                }
                b't' | b'l' | 0x91 => {
                    let items = self.pop_mark("TUPLE/LIST/FROZENSET")?;
                    let o = match op {
                        b't' => Obj::Tuple(items),
                        b'l' => Obj::List(items),
                        _ => Obj::Set(items),
                    };
                    let v = self.alloc(o)?;
                    self.stack.push(v);
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop("TUPLEn")?);
                    }
                    items.reverse();
                    let v = self.alloc(Obj::Tuple(items))?;
                    self.stack.push(v);
                }
                b'd' => {
                    let items = self.pop_mark("DICT")?;
                    if items.len() % 2 != 0 {
                        return Err(self.err("DICT with an odd number of items"));
                    }
                    let pairs = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                    let v = self.alloc(Obj::Dict(pairs))?;
                    self.stack.push(v);
                }
                b'a' | b'e' | 0x90 => {
                    let items = if op == b'a' {
                        alloc::vec![self.pop("APPEND")?]
                    } else {
                        self.pop_mark("APPENDS/ADDITEMS")?
                    };
                    let target = self.top("APPEND")?;
                    match target {
                        Val::Obj(i) => match &mut self.objs[i] {
                            Obj::List(l) if op != 0x90 => l.extend(items),
                            Obj::Set(s) if op == 0x90 => s.extend(items),
                            _ => {
                                return Err(
                                    self.err("APPEND/ADDITEMS to an object of another kind")
                                );
                            }
                        },
                        _ => return Err(self.err("APPEND/ADDITEMS to a scalar")),
                    }
                }
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = self.pop("SETITEM")?;
                        let k = self.pop("SETITEM")?;
                        alloc::vec![k, v]
                    } else {
                        self.pop_mark("SETITEMS")?
                    };
                    if items.len() % 2 != 0 {
                        return Err(self.err("SETITEMS with an odd number of items"));
                    }
                    let target = self.top("SETITEM")?;
                    match target {
                        Val::Obj(i) => match &mut self.objs[i] {
                            Obj::Dict(d) => {
                                d.extend(items.chunks_exact(2).map(|p| (p[0], p[1])));
                            }
                            _ => return Err(self.err("SETITEM on an object that is not a dict")),
                        },
                        _ => return Err(self.err("SETITEM on a scalar")),
                    }
                }
                b'q' => {
                    let i = self.r.u8("BINPUT")? as usize;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.len32("LONG_BINPUT")?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len();
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.r.u8("BINGET")? as usize;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.len32("LONG_BINGET")?;
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line("GLOBAL module")?;
                    let name = self.line("GLOBAL name")?;
                    let v = self.alloc(Obj::Global(module, name))?;
                    self.stack.push(v);
                }
                0x93 => {
                    let name = self.pop("STACK_GLOBAL")?;
                    let module = self.pop("STACK_GLOBAL")?;
                    let (Some(Obj::Str(m)), Some(Obj::Str(n))) = (self.obj(module), self.obj(name))
                    else {
                        return Err(self.err("STACK_GLOBAL of something that is not two strings"));
                    };
                    let g = Obj::Global(m.clone(), n.clone());
                    let v = self.alloc(g)?;
                    self.stack.push(v);
                }
                b'R' => {
                    let args = self.pop("REDUCE")?;
                    let func = self.pop("REDUCE")?;
                    let v = self.call(func, args, "REDUCE")?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop("NEWOBJ")?;
                    let cls = self.pop("NEWOBJ")?;
                    let v = self.call(cls, args, "NEWOBJ")?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop("BUILD")?;
                    let target = self.top("BUILD")?;
                    match target {
                        Val::Obj(i) => match &mut self.objs[i] {
                            Obj::Instance { state: s, .. } => *s = Some(state),
                            // An OrderedDict's `_metadata` (state_dict) or a tensor's extra
                            // state: not needed.
                            Obj::Dict(_) | Obj::Tensor(_) => {}
                            _ => return Err(self.err("BUILD on an object of another kind")),
                        },
                        _ => return Err(self.err("BUILD on a scalar")),
                    }
                }
                b'Q' => {
                    let pid = self.pop("BINPERSID")?;
                    let v = self.persistent(pid)?;
                    self.stack.push(v);
                }
                other => {
                    self.r.seek(at)?;
                    return Err(self.err(format_args!(
                        "opcode {:#04x} ({}) is outside the supported subset",
                        other,
                        opcode_name(other)
                    )));
                }
            }
        }
    }
}
