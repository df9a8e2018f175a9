//! References to tensors as the protos write them, parsed once instead of split by hand: a
//! GraphDef's `node:3`, `node` (output 0), `^node` (control) into `TensorRef` (borrowed) or
//! `TensorId` (owned), and a FunctionDef body's `node:output_arg:3` into `BodyRef`.
use std::fmt;

/// One input of a NodeDef, or a signature's tensor name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorRef<'a> {
    pub node: &'a str,
    /// The output index; -1 for a control dependency (`^node`).
    pub index: i32,
}

impl<'a> TensorRef<'a> {
    /// Parses `node:3` / `node` / `^node`. A suffix that is not a number is part of the node
    /// name (function bodies write `node:output_arg:index`; see `opdefs`).
    pub fn parse(s: &'a str) -> TensorRef<'a> {
        if let Some(rest) = s.strip_prefix('^') {
            return TensorRef {
                node: rest,
                index: -1,
            };
        }
        match s.rsplit_once(':').map(|(n, i)| (n, i.parse())) {
            Some((node, Ok(index))) => TensorRef { node, index },
            _ => TensorRef { node: s, index: 0 },
        }
    }

    /// The node named, whatever the form.
    pub fn node_of(s: &'a str) -> &'a str {
        TensorRef::parse(s).node
    }

    /// Output 0 of `node` (a variable's handle, a placeholder).
    pub fn first(node: &'a str) -> TensorRef<'a> {
        TensorRef { node, index: 0 }
    }

    /// A control dependency (`^node`).
    pub fn is_control(&self) -> bool {
        self.index < 0
    }

    /// The owned form, to keep beyond the string it was parsed from.
    pub fn to_id(&self) -> TensorId {
        TensorId {
            node: self.node.to_string(),
            index: self.index,
        }
    }
}

/// An owned `TensorRef`: a tensor a structure keeps (e.g. what a flat graph's external
/// placeholder stands for in the loaded graph), held as node and index, not as `"node:index"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId {
    pub node: String,
    /// The output index; -1 for a control dependency.
    pub index: i32,
}

impl TensorId {
    /// Parses the forms `TensorRef::parse` takes.
    pub fn parse(s: &str) -> TensorId {
        TensorRef::parse(s).to_id()
    }

    pub fn as_tensor_ref(&self) -> TensorRef<'_> {
        TensorRef {
            node: &self.node,
            index: self.index,
        }
    }
}

/// An input as a FunctionDef body writes it: a function argument (`x`), an output of a body
/// node (`node:output_arg:index`), or a control dependency (`^node`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRef<'a> {
    Arg(&'a str),
    Output {
        node: &'a str,
        /// The name of the node's output argument (`output` for a plain op's only list).
        arg: &'a str,
        /// The index within that argument.
        index: usize,
    },
    Control(&'a str),
}

impl<'a> BodyRef<'a> {
    /// The node (or argument) a body input names, whatever its form: what precedes the first
    /// `:`, without a `^`.
    pub fn node_of(s: &'a str) -> &'a str {
        let s = s.strip_prefix('^').unwrap_or(s);
        s.split(':').next().unwrap_or(s)
    }

    /// Parses one body input; None for any other form (two parts, or an index that is not a
    /// number).
    pub fn parse(s: &'a str) -> Option<BodyRef<'a>> {
        if let Some(c) = s.strip_prefix('^') {
            return Some(BodyRef::Control(c));
        }
        let mut parts = s.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(a), None, None, None) => Some(BodyRef::Arg(a)),
            (Some(node), Some(arg), Some(i), None) => Some(BodyRef::Output {
                node,
                arg,
                index: i.parse().ok()?,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for TensorId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.as_tensor_ref().fmt(f)
    }
}

impl fmt::Display for TensorRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.index {
            i if i < 0 => write!(f, "^{}", self.node),
            0 => write!(f, "{}", self.node),
            i => write!(f, "{}:{i}", self.node),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_prints_it_back() {
        assert_eq!(
            TensorRef::parse("a/b:3"),
            TensorRef {
                node: "a/b",
                index: 3
            }
        );
        assert_eq!(
            TensorRef::parse("a/b"),
            TensorRef {
                node: "a/b",
                index: 0
            }
        );
        assert_eq!(
            TensorRef::parse("^a/b"),
            TensorRef {
                node: "a/b",
                index: -1
            }
        );
        assert!(TensorRef::parse("^a").is_control());
        assert_eq!(TensorRef::parse("f:out:0").node, "f:out");
        assert_eq!(BodyRef::node_of("f:out:0"), "f");
        assert_eq!(BodyRef::node_of("^f"), "f");
        for s in ["a/b:3", "a/b", "^a/b"] {
            assert_eq!(TensorRef::parse(s).to_string(), s);
            assert_eq!(TensorId::parse(s).to_string(), s);
            assert_eq!(TensorId::parse(s).as_tensor_ref(), TensorRef::parse(s));
        }
        assert_eq!(TensorRef::first("v").to_string(), "v");
        assert_eq!(BodyRef::parse("x"), Some(BodyRef::Arg("x")));
        assert_eq!(BodyRef::parse("^n"), Some(BodyRef::Control("n")));
        assert_eq!(
            BodyRef::parse("n:output:2"),
            Some(BodyRef::Output {
                node: "n",
                arg: "output",
                index: 2
            })
        );
        for bad in ["n:0", "n:out:x", "n:out:0:1"] {
            assert_eq!(BodyRef::parse(bad), None, "{bad}");
        }
    }
}
