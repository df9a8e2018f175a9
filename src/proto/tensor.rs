//! A reference to a tensor (or a control dependency) as GraphDefs write it: `node:3`, `node`
//! (output 0), `^node` (control). Parsed once into `TensorRef` instead of split by hand.
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

    /// The node an input of a FunctionDef body names: bodies write `node:output_arg:index`
    /// (or a function argument's name, or `^node`), so the node is what precedes the first `:`.
    pub fn body_node_of(s: &str) -> &str {
        let s = s.strip_prefix('^').unwrap_or(s);
        s.split(':').next().unwrap_or(s)
    }

    /// A control dependency (`^node`).
    pub fn is_control(&self) -> bool {
        self.index < 0
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
        assert_eq!(TensorRef::body_node_of("f:out:0"), "f");
        assert_eq!(TensorRef::body_node_of("^f"), "f");
        for s in ["a/b:3", "a/b", "^a/b"] {
            assert_eq!(TensorRef::parse(s).to_string(), s);
        }
    }
}
